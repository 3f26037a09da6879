"""``python -m tinyspp experiment classify``: the paper's classification claims, measured.

What is compared (paper Sec. 3.1-3.3, Table 2): four networks with the same trunk, the same data,
the same epoch budget and the same learning-rate steps --

1. no SPP, single-size (the fixed-size baseline: one fixed max pooling before the fc layers),
2. SPP, single-size (32 px crops),
3. SPP, multi-size (32 and 26 px, the paper's 224:180, switched every epoch),
4. SPP, random-size (a size drawn from [26, 32] every epoch),

each trained once per seed (``--seeds``, default 0 1 2; a seed sets the initial weights, the
batch order, the crops, flips, jitter and dropout masks) and tested on the SAME test images
(>= 1,000 of the source classes) with a centre crop, 10 views and the full image (SPP only; the
baseline sees the warped image instead). Then the SPP features of *held-out* classes (never
trained on) are classified with a linear SVM, from full and from warped images (paper Sec. 3.3).

The schedule is fair by construction: the learning rate is a function of the epoch number alone
(:func:`tinyspp.train.step_lr`), so every arm gets the same rate at every epoch and the steps fall
on even epochs, where a multi-size net has seen each of its two sizes equally often.

Per claim, the per-image correctness of the two arms is compared with the exact McNemar test
pooled over seeds (:func:`tinyspp.stats.mcnemar`) and a paired bootstrap over test images of the
error difference (:func:`tinyspp.stats.paired_bootstrap`); :func:`tinyspp.stats.verdict` turns
that into reproduced / partly / not reproduced at this scale.

Outputs: ``results/classify.json`` (command, seeds, versions, threads, times, per-seed errors,
histories, per-image correctness as 0/1 strings, the claims) beside ``results/classify.md`` and
its figures (with ``--quick``, in ``runs/classify-quick/`` instead: quick numbers are no finding).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..data import SHAPES, ImageSet, digits_splits, synthetic_splits
from ..nn import Conv2d, Linear, SpatialPyramidPooling, no_spp_net, small_spp_net
from ..train import Trainer, blas_threads, extract_features, forward_views
from ..validate import check_choice
from .options import add_run_options

DATASETS = ("synthetic", "digits")
SEEDS = (0, 1, 2)
EPOCHS, LR, LR_DROP, BATCH = 40, 0.01, 0.1, 32  # shared by the experiment and the demo
CONFIGS = (  # (label, model, schedule)
    ("no SPP, single-size", "nospp", "single"),
    ("SPP, single-size", "spp", "single"),
    ("SPP, multi-size", "spp", "multi"),
    ("SPP, random-size", "spp", "random"),
)
COMMAND = "python -m tinyspp experiment classify"


def lr_steps_for(epochs: int) -> tuple[int, ...]:
    """The epochs at which the lr drops by 10: after 70 % and 90 % of the budget, rounded to even
    epochs (a multi-size net has then trained equally often at both sizes).

    >>> lr_steps_for(40), lr_steps_for(2)
    ((28, 36), ())
    """
    steps = {2 * round(f * epochs / 2) for f in (0.7, 0.9)}
    return tuple(sorted(s for s in steps if 0 < s < epochs))


@dataclass
class Setup:
    """One data set prepared for the experiment (all parts are :class:`ImageSet`)."""

    name: str
    train: ImageSet  # source classes
    val: ImageSet
    test: ImageSet
    target_train: ImageSet  # held-out classes, for the SVM
    target_test: ImageSet
    size: int = 32  # the large training size ("224")
    small: int = 26  # the small one ("180"): 32 * 180 / 224 = 25.7


def make_setup(name: str, *, quick: bool = False, seed: int = 0) -> Setup:
    """Build the source/held-out splits of ``name`` ("synthetic" or "digits").

    Synthetic: 150 train / 30 val / 170 test images per class (6 source classes: 1,020 test
    images; 4 held-out classes: 30 SVM-train and 170 SVM-test images each). The data do not
    depend on the training seeds: every seed is tested on the same images.
    """
    check_choice(name, "name", "make_setup", DATASETS)
    if name == "synthetic":
        source, target = SHAPES[:6], SHAPES[6:]
        counts = (12, 4, 6) if quick else (150, 30, 170)
        train, val, test = synthetic_splits(*counts, size_range=(32, 64), seed=seed)
    else:
        source, target = tuple("01234"), tuple("56789")
        train, val, test = digits_splits((0.6, 0.2, 0.2), size_range=(28, 48), seed=seed,
                                         limit=200 if quick else None)
    svm_train = train.only_classes(target)
    if name == "synthetic":  # 30 training images per class, as for Caltech-101 in the paper
        keep = np.concatenate([np.flatnonzero(svm_train.labels == k)[:30]
                               for k in range(len(target))])
        svm_train = svm_train.subset(np.sort(keep))
    return Setup(name, train.only_classes(source), val.only_classes(source),
                 test.only_classes(source), svm_train, test.only_classes(target))


def full_image_sizes(setup: Setup, *, quick: bool = False) -> list[int]:
    """Shorter sides at which full images are tested (two in quick mode)."""
    return [setup.small, setup.size] if quick else sorted({20, setup.small, setup.size, 40, 48})


def build_model(model: str, setup: Setup, *, seed: int = 0, quick: bool = False):
    """The SPP net or the no-SPP baseline for ``setup`` (tiny widths in quick mode)."""
    check_choice(model, "model", "build_model", ("spp", "nospp"))
    kw = dict(widths=(8, 16, 16), hidden=32) if quick else {}
    C, K = setup.train.channels, setup.train.num_classes
    if model == "spp":
        return small_spp_net(K, C, seed=seed, **kw)
    return no_spp_net(K, C, input_size=setup.size, seed=seed, **kw)


def train_sizes(setup: Setup, schedule: str) -> tuple[int, ...]:
    """The ``sizes`` argument of :class:`~tinyspp.train.Trainer` for ``schedule``."""
    return {"single": (setup.size,), "multi": (setup.size, setup.small),
            "random": (setup.small, setup.size)}[schedule]


def train_one(setup: Setup, model: str, schedule: str, *, epochs: int, seed: int = 0,
              quick: bool = False, device: str = "cpu", out_dir: str | None = None,
              progress: bool = True, lr: float = LR, lr_steps=None) -> Trainer:
    """Train one configuration with the fixed step schedule (``lr_steps`` default:
    :func:`lr_steps_for`); the no-SPP net can only use the single size."""
    net = build_model(model, setup, seed=seed, quick=quick)
    steps = lr_steps_for(epochs) if lr_steps is None else tuple(lr_steps)
    trainer = Trainer(net, setup.train, setup.val, sizes=train_sizes(setup, schedule),
                      schedule=schedule, batch_size=BATCH, lr=lr, lr_schedule="step",
                      lr_steps=steps, lr_drop=LR_DROP, seed=seed, device=device,
                      out_dir=out_dir, progress=progress)
    trainer.fit(epochs)
    return trainer


def correct(trainer: Trainer, dataset: ImageSet, *, view: str, size: int) -> np.ndarray:
    """Bool (N,): whether the net's top-1 class (softmax averaged over views) is right."""
    outs = forward_views(trainer.net, dataset, view=view, size=size, mean=trainer.mean,
                         std=trainer.std, device=trainer.device)
    pred = np.array([_mean_softmax(o).argmax() for o in outs])
    return pred == dataset.labels


def _mean_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).mean(axis=0)


def source_correct(trainer: Trainer, setup: Setup, model: str, test_sizes) -> dict:
    """Per-image correctness on the source test set: ``center``, ``multiview``, ``warp``,
    ``full`` (SPP only) and ``full@<size>`` for each of ``test_sizes`` (SPP only)."""
    views = ["center", "multiview", "warp"] + (["full"] if model == "spp" else [])
    out = {v: correct(trainer, setup.test, view=v, size=setup.size) for v in views}
    if model == "spp":
        out.update({f"full@{s}": correct(trainer, setup.test, view="full", size=s)
                    for s in test_sizes})
    return out


def feature_net(net, layer: str):
    """The part of ``net`` whose output is the pooled trunk ("pool": SPP or the fixed pooling,
    flattened) or the first fc layer after its ReLU ("fc")."""
    check_choice(layer, "layer", "feature_net", ("pool", "fc"))
    layers = list(net)
    first_fc = next(i for i, la in enumerate(layers) if isinstance(la, Linear))
    return net[:first_fc] if layer == "pool" else net[:first_fc + 2]


def svm_correct(trainer: Trainer, setup: Setup, *, layer: str = "pool", view: str = "full",
                C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Bool (N,) on the held-out test images: linear SVM on l2-normalised features."""
    from sklearn.svm import LinearSVC

    part = feature_net(trainer.net, layer)
    feats = []
    for ds in (setup.target_train, setup.target_test):
        f = extract_features(part, ds, view=view, size=setup.size, mean=trainer.mean,
                             std=trainer.std, device=trainer.device)
        feats.append(f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12))
    svm = LinearSVC(C=C, random_state=seed, max_iter=5000)
    svm.fit(feats[0], setup.target_train.labels)
    return svm.predict(feats[1]) == setup.target_test.labels


def svm_accuracy(trainer: Trainer, setup: Setup, **kw) -> float:
    """Mean of :func:`svm_correct`."""
    return float(svm_correct(trainer, setup, **kw).mean())


SVM_ARMS = (  # (name, config label, layer, view)
    ("SPP multi-size, pool features, full image", "SPP, multi-size", "pool", "full"),
    ("SPP multi-size, pool features, warped", "SPP, multi-size", "pool", "warp"),
    ("SPP multi-size, fc features, full image", "SPP, multi-size", "fc", "full"),
    ("no SPP, pool features, warped", "no SPP, single-size", "pool", "warp"),
)


def pooled_lengths(trainer: Trainer, setup: Setup, sizes) -> list[int]:
    """Lengths of the pooled representation (the paper's pool5) of the held-out test images,
    full images at each shorter side in ``sizes`` (every aspect ratio of the set)."""
    part = feature_net(trainer.net, "pool")
    lengths = set()
    for s in sizes:
        for o in forward_views(part, setup.target_test.subset(np.arange(20)), view="full",
                               size=s, mean=trainer.mean, std=trainer.std,
                               device=trainer.device):
            lengths.add(int(o.reshape(o.shape[0], -1).shape[1]))
    return sorted(lengths)


def bits(mask: np.ndarray) -> str:
    """A bool vector as a '0'/'1' string (compact and exact in JSON; read back with
    :func:`tinyspp.apps.reporting.unbits`).

    >>> bits(np.array([True, False, True]))
    '101'
    """
    return "".join("1" if b else "0" for b in np.asarray(mask, bool))


def run_seed(setup: Setup, seed: int, *, epochs: int, quick: bool, device: str, out: str,
             progress: bool, lr: float = LR, log=print) -> dict:
    """Every configuration of :data:`CONFIGS` and every SVM arm for one seed."""
    test_sizes = full_image_sizes(setup, quick=quick)
    arms, trainers = {}, {}
    for label, model, schedule in CONFIGS:
        t0, c0 = time.perf_counter(), time.process_time()
        trainer = train_one(setup, model, schedule, epochs=epochs, seed=seed, quick=quick,
                            device=device, progress=progress, lr=lr,
                            out_dir=os.path.join(out, f"seed{seed}", f"{model}-{schedule}"))
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        hits = source_correct(trainer, setup, model, test_sizes)
        arms[label] = {"train_seconds": train_s, "train_cpu_seconds": train_cpu,
                       "history": trainer.history,
                       "correct": {k: bits(v) for k, v in hits.items()},
                       "error": {k: float(1 - v.mean()) for k, v in hits.items()}}
        trainers[label] = trainer
        log(f"  seed {seed} {label}: {train_s:.0f} s, errors (%) "
            + ", ".join(f"{k} {100 * v:.1f}" for k, v in arms[label]["error"].items()
                        if "@" not in k))
    svm = {}
    for name, label, layer, view in SVM_ARMS:
        hits = svm_correct(trainers[label], setup, layer=layer, view=view, seed=seed)
        svm[name] = {"correct": bits(hits), "accuracy": float(hits.mean())}
    spp_net = trainers["SPP, multi-size"].net
    levels = next(la.levels for la in spp_net if isinstance(la, SpatialPyramidPooling))
    channels = [la for la in spp_net if isinstance(la, Conv2d)][-1].out_channels
    lengths = pooled_lengths(trainers["SPP, multi-size"], setup, test_sizes)
    return {"seed": seed, "arms": arms, "svm": svm, "pool_lengths": lengths,
            "pool_levels": list(levels), "pool_channels": int(channels)}


def versions() -> dict:
    """Versions of Python and the libraries the numbers depend on."""
    import matplotlib
    import scipy
    import skimage
    import sklearn

    from .. import __version__

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "scikit-image": skimage.__version__, "matplotlib": matplotlib.__version__,
            "tinyspp": __version__, "platform": platform.platform()}


def describe_setup(setup: Setup) -> dict:
    return {"source_classes": list(setup.train.classes),
            "heldout_classes": list(setup.target_test.classes),
            "n_train": len(setup.train), "n_val": len(setup.val), "n_test": len(setup.test),
            "n_svm_train": len(setup.target_train), "n_svm_test": len(setup.target_test),
            "train_sizes": {s: list(train_sizes(setup, s)) for s in ("single", "multi",
                                                                       "random")},
            "eval_size": setup.size}


def run_classify(*, datasets=("synthetic",), seeds=SEEDS, epochs: int = EPOCHS,
                 quick: bool = False, device: str = "cpu", out: str | None = None,
                 progress: bool = True, lr: float = LR, threads: int | None = None,
                 argv=None, log=print) -> dict:
    """Run the experiment; write ``classify.json`` and ``classify.md`` to ``out``; return the
    results dict (its ``"report"`` entry is the Markdown path)."""
    from .reporting import classify_claims, write_classify_report

    out = out or ("runs/classify-quick" if quick else "results")
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"run_classify: seeds must be distinct, got {seeds}")
    os.makedirs(out, exist_ok=True)
    runs_dir = os.path.join("runs", "classify-quick" if quick else "classify")
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    t0, c0 = time.perf_counter(), time.process_time()
    res = {"command": " ".join([COMMAND, *(argv or [])]), "quick": quick, "seeds": list(seeds),
           "threads": threads, "device": device, "started": started, "versions": versions(),
           "settings": {"epochs": epochs, "lr": lr, "lr_steps": list(lr_steps_for(epochs)),
                        "lr_drop": LR_DROP, "batch_size": BATCH, "momentum": 0.9,
                        "weight_decay": 5e-4, "lr_schedule": "step"},
           "datasets": {}}
    for name in datasets:
        setup = make_setup(name, quick=quick, seed=0)
        log(f"{name}: {len(setup.train)} train / {len(setup.test)} test images, "
            f"seeds {list(seeds)}, {epochs} epochs, lr {lr} steps {lr_steps_for(epochs)}")
        per_seed = [run_seed(setup, s, epochs=epochs, quick=quick, device=device,
                             out=os.path.join(runs_dir, name), progress=progress, lr=lr, log=log)
                    for s in seeds]
        res["datasets"][name] = {"setup": describe_setup(setup),
                                 "test_sizes": full_image_sizes(setup, quick=quick),
                                 "test_labels": setup.test.labels.tolist(),
                                 "seeds": per_seed}
    res["seconds"] = time.perf_counter() - t0
    res["cpu_seconds"] = time.process_time() - c0  # this process's CPU time: the cost on a
    res["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None  # free core
    res["claims"] = classify_claims(res)
    path = os.path.join(out, "classify.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(path + ".tmp", path)
    res["report"] = write_classify_report(res, out)
    return res


def add_arguments(parser) -> None:
    parser.add_argument("which", choices=["classify"], help="which experiment to run")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=["synthetic"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS),
                        help="training seeds (default 0 1 2); the test images are the same")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epoch budget (default {EPOCHS}, 2 with --quick); the lr drops "
                             "by 10 after 70 %% and 90 %% of it")
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--quick", action="store_true", help="tiny data and nets, for a smoke run")
    parser.add_argument("--out", default=None,
                        help="where classify.json and classify.md go (default results/, or "
                             "runs/classify-quick/ with --quick)")
    add_run_options(parser)


def run(args) -> int:
    with blas_threads(args.threads):
        return _run(args)


def _run(args) -> int:
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else EPOCHS)
    res = run_classify(datasets=args.datasets, seeds=args.seeds, epochs=epochs,
                       quick=args.quick, device=args.device, out=args.out,
                       progress=not args.no_progress, lr=args.lr, threads=args.threads,
                       argv=sys.argv[3:] if sys.argv[1:3] == ["experiment", "classify"] else None)
    from .reporting import claims_markdown

    print("\n" + claims_markdown(res["claims"]) + "\n")
    print(f"results written to {os.path.join(os.path.dirname(res['report']), 'classify.json')}"
          f"; report {res['report']} ({res['seconds']:.0f} s)")
    return 0
