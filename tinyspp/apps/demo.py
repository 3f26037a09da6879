"""``python -m tinyspp demo``: the main job, end to end on built-in data, in a few minutes.

1. Draw the synthetic shapes data set (varied sizes and aspect ratios; six source classes for
   training, four held-out classes for the transfer test).
2. Train the small SPP-net with multi-size training (32 and 26 px, one set of parameters, the
   size switched every epoch), and the no-SPP baseline at 32 px for comparison.
3. Evaluate: centre crop, 10 views and the full image at several test sizes.
4. SVM on features (paper Sec. 3.3): SPP features of the held-out classes from full images vs
   warped images, with ``sklearn.svm.LinearSVC``.
5. Detection: SPP-net vs R-CNN (:mod:`tinyspp.apps.detect_demo`, skipped with ``--no-detect``).
6. Write ``report.md`` and PNG figures to ``--out`` (default ``runs/demo/``) and print where.

The report is assembled from *sections*: functions ``section(ctx) -> str`` (Markdown) listed in
:data:`SECTIONS` and run in order, sharing a :class:`DemoContext`. Adding a part to the demo
(e.g. detection) means writing one such function and appending it to :data:`SECTIONS`.
``--quick`` runs the same sections on tiny data with tiny nets (under a minute; the tests use it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..backend import check_device
from ..train import blas_threads
from .experiments import (
    EPOCHS,
    LR,
    PATIENCE,
    full_image_sizes,
    make_setup,
    svm_accuracy,
    train_one,
)
from .options import add_run_options
from .reporting import (
    markdown_table,
    pct,
    plot_error_vs_size,
    plot_learning_curves,
    plot_samples,
)


@dataclass
class DemoContext:
    """What the sections share: options, the output folder, and results of earlier sections."""

    out: str
    quick: bool = False
    epochs: int = EPOCHS
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    detect: bool = True
    results: dict = field(default_factory=dict)

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def say(self, msg: str) -> None:
        print(msg, flush=True)


def data_section(ctx: DemoContext) -> str:
    setup = make_setup("synthetic", quick=ctx.quick, seed=ctx.seed)
    ctx.results["setup"] = setup
    fig = plot_samples(setup.train, ctx.path("samples.png"))
    sizes = setup.train.sizes()
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    ctx.say(f"data: {len(setup.train)} training images of {setup.train.num_classes} classes, "
            f"H {min(hs)}-{max(hs)}, W {min(ws)}-{max(ws)}")
    return "\n".join([
        "## Data", "",
        f"Synthetic shapes on photographic backgrounds (`tinyspp.data.synthetic`). Source classes "
        f"{', '.join(setup.train.classes)}: {len(setup.train)} train / {len(setup.val)} val / "
        f"{len(setup.test)} test images, heights {min(hs)}-{max(hs)} px and widths "
        f"{min(ws)}-{max(ws)} px. Held-out classes {', '.join(setup.target_test.classes)} are "
        "only used for the SVM transfer test.", "",
        f"![samples]({os.path.basename(fig)})", ""])


def training_section(ctx: DemoContext) -> str:
    setup = ctx.results["setup"]
    runs = {}
    for label, model, schedule in (("SPP, multi-size (32, 26)", "spp", "multi"),
                                   ("no SPP, single-size 32", "nospp", "single")):
        ctx.say(f"training {label} for {ctx.epochs} epochs")
        t0 = time.perf_counter()
        trainer = train_one(setup, model, schedule, epochs=ctx.epochs, seed=ctx.seed,
                            quick=ctx.quick, device=ctx.device, progress=ctx.progress,
                            out_dir=ctx.path(f"{model}-{schedule}"))
        runs[label] = (trainer, model, time.perf_counter() - t0)
    ctx.results["runs"] = runs
    fig = plot_learning_curves({k: t.history for k, (t, _, _) in runs.items()},
                               ctx.path("learning_curves.png"))
    rows = []
    for label, (t, _, secs) in runs.items():
        ips = sum(h["images_per_s"] for h in t.history) / len(t.history)
        rows.append([label, f"{t.history[-1]['train_loss']:.3f}",
                     pct(t.history[-1].get("val_error")), f"{secs:.0f}", f"{ips:.0f}"])
    return "\n".join([
        "## Training", "",
        f"{ctx.epochs} epochs of SGD (batch 32, momentum 0.9, weight decay 5e-4, lr {LR} divided "
        f"by 10 when the validation error stalls for {PATIENCE} epochs), dropout 0.5 on the "
        "hidden fc layer. "
        "The multi-size net switches between 32 px and 26 px every epoch "
        "(32:26 is the paper's 224:180).", "",
        markdown_table(["network", "final train loss", "val error (%)", "seconds",
                        "train images/s"], rows), "",
        f"![learning curves]({os.path.basename(fig)})", ""])


def evaluation_section(ctx: DemoContext) -> str:
    setup = ctx.results["setup"]
    sizes = full_image_sizes(setup, quick=ctx.quick)
    rows, curves = [], {}
    for label, (t, model, _) in ctx.results["runs"].items():
        ev = lambda view, size=setup.size, t=t: t.evaluate(setup.test, view=view,
                                                           size=size)["error"]
        full = ev("full") if model == "spp" else None
        rows.append([label, pct(ev("center")), pct(ev("multiview")), pct(ev("warp")),
                     pct(full)])
        if model == "spp":
            curves[label] = {s: ev("full", s) for s in sizes}
    ctx.say("\n" + markdown_table(["network", "centre", "10 views", "warped", "full"], rows))
    fig = plot_error_vs_size(curves, ctx.path("error_vs_size.png"),
                             train_sizes=(setup.small, setup.size))
    curve_rows = [[lab] + [pct(c[s]) for s in sizes] for lab, c in curves.items()]
    return "\n".join([
        "## Evaluation (top-1 error %, source-class test images)", "",
        "centre: central crop after resizing the shorter side to 32; 10 views: centre + 4 "
        "corners and their mirror images, softmax averaged; warped: whole image squeezed to "
        "32x32; full: whole image at its own aspect ratio, shorter side 32 -- only the SPP net "
        "accepts it.", "",
        markdown_table(["network", "centre crop", "10 views", "warped", "full image"], rows), "",
        "Full-image error by test size (shorter side, px):", "",
        markdown_table(["network"] + [str(s) for s in sizes], curve_rows), "",
        f"![error vs size]({os.path.basename(fig)})", ""])


def svm_section(ctx: DemoContext) -> str:
    setup = ctx.results["setup"]
    rows = []
    for label, (t, model, _) in ctx.results["runs"].items():
        views = ("full", "warp") if model == "spp" else ("warp",)
        for view in views:
            acc = svm_accuracy(t, setup, layer="pool", view=view, seed=ctx.seed)
            rows.append([label, "full image" if view == "full" else "warped", f"{100 * acc:.1f}"])
    ctx.say("\n" + markdown_table(["features of", "input", "SVM accuracy (%)"], rows))
    return "\n".join([
        "## SVM on features of held-out classes (paper Sec. 3.3)", "",
        "Pooled conv features (SPP: levels 4, 2, 1 = 21 bins per channel; no SPP: the fixed "
        f"4x4 pooling) of the held-out classes {', '.join(setup.target_test.classes)}, "
        f"l2-normalised; `LinearSVC` trained on {len(setup.target_train)} images, tested on "
        f"{len(setup.target_test)}.", "",
        markdown_table(["features of", "input", "SVM accuracy (%)"], rows), ""])


def detection_section(ctx: DemoContext) -> str:
    """The SPP-net vs R-CNN detection demo (:mod:`tinyspp.apps.detect_demo`), in ``out/detect/``."""
    if not ctx.detect:
        return ""
    from .detect_demo import run_detection_demo

    ctx.say("detection: SPP-net vs R-CNN (tinyspp.apps.detect_demo)")
    _, md = run_detection_demo(ctx.path("detect"), quick=ctx.quick, seed=ctx.seed,
                               device=ctx.device, log=lambda msg: None)
    md = md.replace("](", "](detect/")  # its figures live in the detect/ sub-folder
    return "\n".join("#" + line if line.startswith("#") else line for line in md.splitlines())


SECTIONS = [data_section, training_section, evaluation_section, svm_section, detection_section]


def run_demo(*, out: str = "runs/demo", quick: bool = False, epochs: int | None = None,
             seed: int = 0, device: str = "cpu", progress: bool = True,
             detect: bool = True) -> str:
    """Run every section of :data:`SECTIONS`; write ``out/report.md``; return its path."""
    check_device(device, "demo")
    os.makedirs(out, exist_ok=True)
    ctx = DemoContext(out=out, quick=quick, epochs=epochs or (2 if quick else EPOCHS), seed=seed,
                      device=device, progress=progress, detect=detect)
    t0 = time.perf_counter()
    parts = [section(ctx) for section in SECTIONS]
    head = ["# tinyspp demo report", "",
            f"{'Quick mode (tiny data and nets: numbers are not meaningful). ' if quick else ''}"
            f"Seed {seed}, device {device}, {time.perf_counter() - t0:.0f} s in total.", ""]
    path = ctx.path("report.md")
    with open(path, "w") as fh:
        fh.write("\n".join(head + parts))
    return path


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the same path on tiny data (under a minute)")
    parser.add_argument("--out", default="runs/demo", help="report folder (default runs/demo)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default {EPOCHS} (2 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-detect", action="store_true", help="skip the detection part")
    add_run_options(parser)


def run(args) -> int:
    with blas_threads(args.threads):
        return _run(args)


def _run(args) -> int:
    path = run_demo(out=args.out, quick=args.quick, epochs=args.epochs, seed=args.seed,
                    device=args.device, progress=not args.no_progress,
                    detect=not args.no_detect)
    print(f"report written to {os.path.abspath(path)}")
    return 0
