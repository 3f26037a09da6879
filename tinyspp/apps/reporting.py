"""Figures, Markdown tables and the claims of the experiment and demo reports.

Every function takes numbers that training/evaluation produced and only computes statistics on
them, draws or formats them. The claims (:func:`classify_claims`) are made here from the
per-image correctness recorded in ``results/classify.json``; the renderers ``claims_table`` and
``classify_details`` (registered in :data:`tinyspp.apps.publish.RENDERERS`) turn the results
files into the generated blocks of README.md and docs/results.md.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..stats import mcnemar, mean_sd, paired_bootstrap, verdict

DPI = 120
FONT = 8.5


def _plain_log_axis(ax) -> None:
    """Label a log-scaled y axis with plain numbers (0.5, 1, 5, 10) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT, "axes.titlesize": FONT + 0.5,
                         "legend.fontsize": FONT, "xtick.labelsize": FONT,
                         "ytick.labelsize": FONT})
    return plt


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats in ``rows`` are printed as given (format them first).

    >>> print(markdown_table(["a", "b"], [[1, "x"]]))
    | a | b |
    |---|---|
    | 1 | x |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(error: float | None) -> str:
    """An error fraction as a percentage with one decimal, or '-'.

    >>> pct(0.1234), pct(None)
    ('12.3', '-')
    """
    return "-" if error is None else f"{100 * error:.1f}"


def pm(values, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sd`` of ``values`` (times ``scale``); one value prints alone.

    >>> pm([0.02, 0.04])
    '3.0 ± 1.4'
    >>> pm([0.05])
    '5.0'
    """
    m, s = mean_sd(values)
    if math.isnan(s):
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def _p(p: float) -> str:
    """A p-value for a table.

    >>> _p(0.0412), _p(3e-7), _p(1.0)
    ('0.041', '3e-07', '1.00')
    """
    if p < 0.001:
        return f"{p:.0e}"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


# ---------------------------------------------------------------------------------- claims
def unbits(s: str) -> np.ndarray:
    """A '0'/'1' string (as written by the experiment) as a bool vector.

    >>> unbits("101").tolist()
    [True, False, True]
    """
    return np.frombuffer(s.encode(), dtype=np.uint8) == ord("1")


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """Compare arm A with arm B on the same items, over seeds.

    Parameters
    ----------
    correct_a, correct_b : ndarray of bool, shape (S, N)
        Per seed (row) and test item (column): whether the arm got the item right.

    Returns
    -------
    dict with ``err_a``, ``err_b`` (per-seed error lists), ``b``, ``c``, ``p_mcnemar`` (exact
    McNemar pooled over seeds), ``diff`` (mean error of A minus B), ``low``, ``high`` (95 %
    paired bootstrap interval over items, the same resampled items for every seed),
    ``p_boot`` and ``seeds_a_better`` (how many seeds have A's error below B's).
    """
    A, B = np.atleast_2d(correct_a).astype(bool), np.atleast_2d(correct_b).astype(bool)
    if A.shape != B.shape:
        raise ValueError(f"paired_comparison: shapes differ, {A.shape} vs {B.shape}")
    err_a, err_b = 1 - A.mean(axis=1), 1 - B.mean(axis=1)
    mc = mcnemar(A.ravel(), B.ravel())
    wrong_a, wrong_b = ~A, ~B
    boot = paired_bootstrap(lambda i: wrong_a[:, i].mean() - wrong_b[:, i].mean(), A.shape[1],
                            n_boot=n_boot, seed=seed)
    return {"err_a": err_a.tolist(), "err_b": err_b.tolist(), "b": mc.b, "c": mc.c,
            "p_mcnemar": mc.p_value, "diff": boot.diff, "low": boot.low, "high": boot.high,
            "p_boot": boot.p_value, "seeds_a_better": int(np.sum(err_a < err_b)),
            "n_seeds": int(A.shape[0]), "n_items": int(A.shape[1])}


def _statistic_text(cmp: dict, what: str = "error") -> str:
    S = cmp["n_seeds"]
    return (f"exact McNemar, {S} seed{'s' if S > 1 else ''} x {cmp['n_items']} images pooled: "
            f"only A right {cmp['b']}, only B right {cmp['c']}, p = {_p(cmp['p_mcnemar'])}; "
            f"{what} "
            f"difference {100 * cmp['diff']:+.1f} pp, 95 % CI [{100 * cmp['low']:+.1f}, "
            f"{100 * cmp['high']:+.1f}] (paired bootstrap over images); A better in "
            f"{cmp['seeds_a_better']}/{S} seeds")


def _claim(cid: str, claim: str, paper: str, tinyspp: str, cmp: dict) -> dict:
    """A claims-table row: A is the arm the paper says is better (lower error)."""
    ok = cmp["diff"] < 0
    agree = cmp["seeds_a_better"] == cmp["n_seeds"] if cmp["n_seeds"] > 1 else None
    return {"id": cid, "claim": claim, "paper": paper, "tinyspp": tinyspp,
            "statistic": _statistic_text(cmp),
            "verdict": verdict(ok, cmp["p_mcnemar"], seeds_agree=agree), "numbers": cmp}


# The paper's numbers (arXiv 1406.4729v4; see /work/shared/SPP_NOTES.md, Sec. 5).
PAPER = {
    "spp_trunk": "ZF-5, ImageNet top-1, 10 views: no SPP 35.99 %, SPP single-size 34.98 % "
                 "(Sec. 3.1.2, Table 2)",
    "multi_vs_single": "Overfeat-7, top-1, 10 views: single-size 30.36 %, multi-size 29.68 % "
                       "(Sec. 3.1.3, Table 2)",
    "two_vs_random": "Overfeat-7, top-1: sizes {180, 224} 29.68 %, random size in [180, 224] "
                     "30.06 % (Sec. 3.1.3)",
    "full_vs_crop": "the full-image view is more accurate than the 224 centre crop for every "
                    "network (Sec. 3.1.4, Table 3)",
    "svm_full_vs_warp": "Caltech-101, SPP features + linear SVM: full image 91.44 %, warped "
                        "89.91 % accuracy (Sec. 3.3)",
    "pool5_dim": "fixed length whatever the input size: 256 x (36 + 9 + 4 + 1) = 12,800 "
                 "(Sec. 2.3)",
}


def _stack(ds: dict, label: str, view: str) -> np.ndarray:
    return np.stack([unbits(s["arms"][label]["correct"][view]) for s in ds["seeds"]])


def _svm_stack(ds: dict, name: str) -> np.ndarray:
    return np.stack([unbits(s["svm"][name]["correct"]) for s in ds["seeds"]])


def classify_claims(res: dict, dataset: str | None = None) -> list[dict]:
    """The classification claims of the paper, measured on ``dataset`` (default: "synthetic"
    when it was run, else the first data set) of an experiment's results (the dict written to
    ``classify.json``)."""
    if dataset is None:
        dataset = "synthetic" if "synthetic" in res["datasets"] else next(iter(res["datasets"]))
    ds = res["datasets"][dataset]
    S, N = len(ds["seeds"]), ds["setup"]["n_test"]
    on = f"({S} seed{'s' if S > 1 else ''}, {N} test images)"
    claims = []

    def arm_pair(cid, text, a, b, view_a, view_b, what_a, what_b, metric):
        cmp = paired_comparison(_stack(ds, a, view_a), _stack(ds, b, view_b))
        tiny = (f"{metric} (%): {what_b} {pm(cmp['err_b'])}, {what_a} {pm(cmp['err_a'])} {on}")
        claims.append(_claim(cid, text, PAPER[cid], tiny, cmp))

    arm_pair("spp_trunk", "SPP improves a given trunk (same conv layers, single-size)",
             "SPP, single-size", "no SPP, single-size", "multiview", "multiview",
             "SPP", "no SPP", "10-view error")
    arm_pair("multi_vs_single", "Multi-size training beats single-size training",
             "SPP, multi-size", "SPP, single-size", "multiview", "multiview",
             "multi-size", "single-size", "10-view error")
    arm_pair("two_vs_random", "Two fixed sizes beat a random size from the same range",
             "SPP, multi-size", "SPP, random-size", "multiview", "multiview",
             "two sizes", "random size", "10-view error")
    arm_pair("full_vs_crop", "The full image beats the centre crop (SPP, multi-size)",
             "SPP, multi-size", "SPP, multi-size", "full", "center",
             "full image", "centre crop", "error")
    A = _svm_stack(ds, "SPP multi-size, pool features, full image")
    B = _svm_stack(ds, "SPP multi-size, pool features, warped")
    cmp = paired_comparison(A, B)
    M = ds["setup"]["n_svm_test"]
    tiny = (f"held-out classes, linear SVM accuracy (%): warped {pm(1 - np.array(cmp['err_b']))}"
            f", full image {pm(1 - np.array(cmp['err_a']))} ({S} seeds, "
            f"{ds['setup']['n_svm_train']} train / {M} test images)")
    claims.append(_claim("svm_full_vs_warp",
                         "SPP features of the full image + a linear SVM beat warped images",
                         PAPER["svm_full_vs_warp"], tiny, cmp))
    lengths = sorted({n for s in ds["seeds"] for n in s["pool_lengths"]})
    ch, levels = ds["seeds"][0]["pool_channels"], ds["seeds"][0]["pool_levels"]
    sizes = ds["test_sizes"]
    claims.append({
        "id": "pool5_dim", "claim": "SPP gives one representation length for every input size",
        "paper": PAPER["pool5_dim"],
        "tinyspp": f"{' / '.join(str(n) for n in lengths)} = {ch} channels x "
                   f"({' + '.join(str(n * n) for n in levels)}) bins for "
                   f"full images of shorter side {min(sizes)}-{max(sizes)} px, every aspect "
                   "ratio of the test set",
        "statistic": f"lengths measured on 20 images x {len(sizes)} sizes x {S} seeds: "
                     f"{len(lengths)} distinct",
        "verdict": "reproduced" if len(lengths) == 1 else "not reproduced at this scale",
        "numbers": {"lengths": lengths}})
    return claims


def claims_markdown(claims: list[dict]) -> str:
    """The claims as a Markdown table (claim, paper, tinyspp, statistic, verdict)."""
    rows = [[c["claim"], c["paper"], c["tinyspp"], c["statistic"], f"**{c['verdict']}**"]
            for c in claims]
    return markdown_table(["claim", "paper", "tinyspp (mean ± sd)", "paired statistic",
                           "verdict"], rows)


RESULT_FILES = ("classify", "detect")  # the order of the claims table


def _load(results_dir: Path, name: str) -> dict | None:
    path = Path(results_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def claims_table(results_dir: Path) -> str:
    """Renderer ``claims.table``: the claims of every results file present (classify, then
    detect), with a line per file saying which command and seeds produced them."""
    rows, sources = [], []
    for name in RESULT_FILES:
        res = _load(results_dir, name)
        if res is None or not res.get("claims"):
            continue
        rows += res["claims"]
        seeds = res.get("seeds")
        secs, cpu = res.get("seconds"), res.get("cpu_seconds")
        sources.append(f"`results/{name}.json`: `{res.get('command', '?')}`"
                       + (f", seeds {', '.join(map(str, seeds))}" if seeds else "")
                       + (f", {secs / 60:.0f} min wall" if secs else "")
                       + (f" ({cpu / 60:.0f} min CPU)" if cpu else "")
                       + (f", {res['threads']} BLAS thread(s)" if res.get("threads") else ""))
    if not rows:
        return "_No results files yet: run `python -m tinyspp experiment classify`._"
    rule = ("Verdicts (computed by `tinyspp.stats.verdict`): **reproduced** = the paper's "
            "direction and p < 0.05 with every seed agreeing; **partly** = the paper's direction "
            "without that; **not reproduced at this scale** = the opposite direction (a claim "
            "of being *comparable* is reproduced when the 95 % interval of the difference lies "
            "above the margin its statistic states). In the classification statistics, A is "
            "the arm the paper says is better and B the other; an error difference below 0 is "
            "the paper's direction.")
    return "\n".join([claims_markdown(rows), "", rule, "", "Sources: " + "; ".join(sources)
                      + "."])


def error_rows(ds: dict, views=("center", "multiview", "full", "warp")) -> list[list[str]]:
    """One row per configuration: test error mean ± sd (%) per view, training seconds."""
    rows = []
    for label in ds["seeds"][0]["arms"]:
        per = [s["arms"][label] for s in ds["seeds"]]
        cells = [pm([p["error"][v] for p in per]) if v in per[0]["error"] else "-"
                 for v in views]
        secs = [p.get("train_cpu_seconds", p["train_seconds"]) for p in per]
        rows.append([label, *cells, f"{np.mean(secs):.0f}"])
    return rows


def classify_details(results_dir: Path) -> str:
    """Renderer ``classify.details``: settings, per-arm errors, error by size, SVM accuracies
    from ``results/classify.json``."""
    res = _load(results_dir, "classify")
    if res is None:
        return "_No `results/classify.json` yet: run `python -m tinyspp experiment classify`._"
    return classify_summary(res)


def classify_summary(res: dict, dataset: str = "synthetic") -> str:
    """The detailed Markdown of one experiment's results (report and docs/results.md)."""
    ds = res["datasets"][dataset]
    st, su = res["settings"], ds["setup"]
    S = len(ds["seeds"])
    lines = [
        f"`{res['command']}`: seeds {', '.join(map(str, res['seeds']))}; "
        f"{res['seconds'] / 60:.1f} min wall-clock"
        + (f" and {res['cpu_seconds'] / 60:.1f} min of CPU time (about the wall time on a free "
           f"core; the machine was shared, load average {res['load_average'][0]:.1f} at the end)"
           if res.get("cpu_seconds") and res.get("load_average") else "")
        + f", {res.get('threads') or 'all'} BLAS thread(s), started {res['started']} (numpy "
        f"{res['versions']['numpy']}, Python {res['versions']['python']}).", "",
        f"Data ({dataset}): {su['n_train']} train / {su['n_val']} val / {su['n_test']} test "
        f"images of the source classes {', '.join(su['source_classes'])}; the test images are "
        f"the same for every seed. Schedule, the same for every network: {st['epochs']} epochs, "
        f"batch {st['batch_size']}, SGD momentum {st['momentum']}, weight decay "
        f"{st['weight_decay']}, lr {st['lr']}"
        + (f" times {st['lr_drop']} from epochs {', '.join(str(e + 1) for e in st['lr_steps'])}"
           " on." if st["lr_steps"] else " throughout."), "",
        f"Top-1 test error (%), mean ± sd over {S} seeds:", "",
        markdown_table(["network", "centre crop", "10 views", "full image", "warped",
                        "train CPU s / seed"], error_rows(ds)), "",
    ]
    sizes = ds["test_sizes"]
    spp = [lab for lab in ds["seeds"][0]["arms"] if f"full@{sizes[0]}" in
           ds["seeds"][0]["arms"][lab]["error"]]
    rows = [[lab] + [pm([s["arms"][lab]["error"][f"full@{z}"] for s in ds["seeds"]])
                     for z in sizes] for lab in spp]
    lines += ["Full-image error (%) by test size (shorter side, px):", "",
              markdown_table(["network"] + [str(z) for z in sizes], rows), ""]
    names = list(ds["seeds"][0]["svm"])
    rows = [[n, pm([s["svm"][n]["accuracy"] for s in ds["seeds"]])] for n in names]
    lines += [f"Linear SVM on features of the held-out classes "
              f"{', '.join(su['heldout_classes'])} ({su['n_svm_train']} train / "
              f"{su['n_svm_test']} test images), accuracy (%):", "",
              markdown_table(["features", "accuracy"], rows)]
    return "\n".join(lines)


def write_classify_report(res: dict, out: str) -> str:
    """``out/classify.md`` with the claims, the detailed tables and figures; returns its path."""
    lines = ["# Classification experiment (tinyspp)", ""]
    if res.get("quick"):
        lines += ["**Quick mode: tiny data and nets, the numbers mean nothing.**", ""]
    lines += ["## Claims", "", claims_markdown(res["claims"]), ""]
    for name, d in res["datasets"].items():
        lc = plot_seed_curves(d, os.path.join(out, f"classify_{name}_curves.png"),
                              title=f"{name}: validation error per epoch")
        es = plot_error_vs_size(
            {lab: {z: [s["arms"][lab]["error"][f"full@{z}"] for s in d["seeds"]]
                   for z in d["test_sizes"]}
             for lab in d["seeds"][0]["arms"]
             if f"full@{d['test_sizes'][0]}" in d["seeds"][0]["arms"][lab]["error"]},
            os.path.join(out, f"classify_{name}_error_vs_size.png"),
            train_sizes=tuple(d["setup"]["train_sizes"]["multi"]))
        lines += [f"## {name}", "", classify_summary(res, name), "",
                  f"![validation curves]({os.path.basename(lc)})",
                  f"![error vs size]({os.path.basename(es)})", ""]
    path = os.path.join(out, "classify.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


# ---------------------------------------------------------------------------------- figures
def plot_samples(dataset, path: str, *, per_class: int = 3) -> str:
    """A grid of ``per_class`` images of every class, at their own sizes."""
    plt = _plt()
    K = dataset.num_classes
    fig, axes = plt.subplots(per_class, K, figsize=(1.3 * K, 1.4 * per_class), squeeze=False)
    for k in range(K):
        idx = np.flatnonzero(dataset.labels == k)[:per_class]
        for r in range(per_class):
            ax = axes[r, k]
            ax.axis("off")
            if r < len(idx):
                img = dataset.images[idx[r]]
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0),
                          cmap="gray", vmin=0, vmax=1)
                H, W = img.shape[1:]
                ax.set_title(f"{dataset.classes[k]}\n{H}x{W}" if r == 0 else f"{H}x{W}",
                             fontsize=FONT)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(histories: dict, path: str, *, title: str = "") -> str:
    """Training loss and validation error per epoch, one line per run (``name -> history``).

    The validation error is drawn on a log axis so that the last epochs (a few %) stay
    readable next to the first (tens of %)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        a.plot(epochs, [h["train_loss"] for h in hist], marker=".", label=name)
        if all("val_error" in h for h in hist):
            b.plot(epochs, [max(100 * h["val_error"], 0.1) for h in hist], marker=".",
                   label=name)
    a.set(xlabel="epoch", ylabel="training loss (cross-entropy)",
          title=title or "training loss")
    b.set(xlabel="epoch", ylabel="validation error (%, log scale)", yscale="log",
          title="validation error (centre crop)")
    _plain_log_axis(b)
    a.legend()
    b.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_seed_curves(ds: dict, path: str, *, title: str = "") -> str:
    """Validation error (mean and range over seeds) and the learning rate per epoch, one line
    per configuration: the lr panel shows every arm gets the same schedule."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.3), gridspec_kw={"width_ratios": [2, 1]})
    for label in ds["seeds"][0]["arms"]:
        hists = [s["arms"][label]["history"] for s in ds["seeds"]]
        ep = np.array([h["epoch"] for h in hists[0]])
        val = np.array([[max(100 * h["val_error"], 0.1) for h in hist] for hist in hists])
        line, = a.plot(ep, val.mean(axis=0), label=label)
        a.fill_between(ep, val.min(axis=0), val.max(axis=0), color=line.get_color(),
                       alpha=0.2, lw=0)
        b.step(ep, [h["lr"] for h in hists[0]], where="post", label=label,
               color=line.get_color())
    a.set(xlabel="epoch", ylabel="validation error (%, log scale)", yscale="log",
          title=title or "validation error: mean and range over seeds")
    _plain_log_axis(a)
    a.legend()
    b.set(xlabel="epoch", ylabel="learning rate", yscale="log",
          title="learning rate (all arms overlap)")
    fig.tight_layout()
    return _save(fig, path)


def plot_error_vs_size(curves: dict, path: str, *, title: str = "",
                       train_sizes=()) -> str:
    """Test error against test size, one labelled line per run (``name -> {size: error}``;
    an error may be a list over seeds: then the mean is drawn with the range as error bars)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for k, (name, by_size) in enumerate(curves.items()):
        sizes = sorted(by_size)
        shift = 0.25 * (k - (len(curves) - 1) / 2)  # side by side, so error bars stay apart
        vals = [np.atleast_1d(by_size[s]) * 100 for s in sizes]
        mean = np.array([v.mean() for v in vals])
        err = np.array([[v.mean() - v.min() for v in vals], [v.max() - v.mean() for v in vals]])
        ax.errorbar(np.array(sizes) + shift, mean,
                    yerr=err if any(v.size > 1 for v in vals) else None,
                    marker="o", capsize=3, label=name)
    for i, s in enumerate(train_sizes):
        ax.axvline(s, color="grey", lw=0.8, ls=":", label="training sizes" if i == 0 else None)
    ax.set(xlabel="test size (shorter side of the full image, px)", ylabel="test error (%)",
           title=title or "full-image error vs test size")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def notebook_times(results_dir: Path) -> str:
    """Renderer ``notebooks.times``: the wall time of each notebook's last full run
    (``results/notebooks.json``, written by ``TINYSPP_QUICK=0 python notebooks/run.py NN``)."""
    res = _load(results_dir, "notebooks")
    if not res or not res.get("runs"):
        return "_No full-run times recorded yet (`TINYSPP_QUICK=0 python notebooks/run.py`)._"
    runs = res["runs"]
    cells = [f"{name.split('_')[0]} {_duration(r['seconds'])}" for name, r in sorted(runs.items())]
    loads = [r["load_average"] for r in runs.values() if r.get("load_average") is not None]
    return (f"Full-run wall times (`{res['command']}`, {res.get('cpu_cores', '?')} cores"
            + (f", load average {min(loads):.1f}-{max(loads):.1f} from other work" if loads
               else "") + "): " + ", ".join(cells) + ".")


def _duration(seconds: float) -> str:
    """
    >>> _duration(42.0), _duration(150.0)
    ('42 s', '2.5 min')
    """
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
