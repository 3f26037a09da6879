"""``python -m tinyspp demo``: the main job, end to end on built-in data, in a few minutes.

1. Draw the synthetic shapes data set (varied sizes and aspect ratios; six source classes for
   training, four held-out classes for the transfer test).
2. Train the small SPP-net with multi-size training (32 and 26 px, one set of parameters, the
   size switched every epoch), and the no-SPP baseline at 32 px for comparison.
3. Evaluate: centre crop, 10 views and the full image at several test sizes.
4. SVM on features (paper Sec. 3.3): SPP features of the held-out classes from full images vs
   warped images, with ``sklearn.svm.LinearSVC``.
5. This run beside the multi-seed experiment: the demo is ONE seed; its errors are printed next
   to the mean ± sd over seeds and the claims' verdicts recorded in ``results/classify.json``
   (written by ``python -m tinyspp experiment classify``), so one run is never read as a finding.
6. Detection: SPP-net vs R-CNN (:mod:`tinyspp.apps.detect_demo`, skipped with ``--no-detect``).
7. Write ``report.md`` and PNG figures to ``--out`` (default ``runs/demo/``) and print where.

Training uses the experiment's schedule, the same for both networks: a fixed epoch budget with
the learning rate divided by 10 at fixed epochs (:func:`tinyspp.apps.experiments.lr_steps_for`).

The report is assembled from *sections*: functions ``section(ctx) -> str`` (Markdown) listed in
:data:`SECTIONS` and run in order, sharing a :class:`DemoContext`. Adding a part to the demo
(e.g. detection) means writing one such function and appending it to :data:`SECTIONS`.
``--quick`` runs the same sections on tiny data with tiny nets (under a minute; the tests use it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..backend import check_device
from ..train import blas_threads
from .experiments import (
    BATCH,
    EPOCHS,
    LR,
    full_image_sizes,
    lr_steps_for,
    make_setup,
    svm_accuracy,
    train_one,
)
from .options import add_run_options
from .publish import RESULTS
from .reporting import (
    claims_markdown,
    markdown_table,
    pct,
    plot_error_vs_size,
    plot_learning_curves,
    plot_samples,
    pm,
)

# the demo's two networks and the experiment's configuration each one is
DEMO_RUNS = (("SPP, multi-size (32, 26)", "spp", "multi", "SPP, multi-size"),
             ("no SPP, single-size 32", "nospp", "single", "no SPP, single-size"))


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
    results_dir: str = str(RESULTS)
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
    for label, model, schedule, _ in DEMO_RUNS:
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
        f"{ctx.epochs} epochs of SGD (batch {BATCH}, momentum 0.9, weight decay 5e-4, lr {LR} "
        f"divided by 10 from epochs {', '.join(str(e + 1) for e in lr_steps_for(ctx.epochs))} "
        "on -- the same schedule for both networks and for the multi-seed experiment), dropout "
        "0.5 on the hidden fc layer. "
        "The multi-size net switches between 32 px and 26 px every epoch "
        "(32:26 is the paper's 224:180).", "",
        markdown_table(["network", "final train loss", "val error (%)", "seconds",
                        "train images/s"], rows), "",
        f"![learning curves]({os.path.basename(fig)})", ""])


def evaluation_section(ctx: DemoContext) -> str:
    setup = ctx.results["setup"]
    sizes = full_image_sizes(setup, quick=ctx.quick)
    rows, curves, errors = [], {}, {}
    for label, (t, model, _) in ctx.results["runs"].items():
        ev = lambda view, size=setup.size, t=t: t.evaluate(setup.test, view=view,
                                                           size=size)["error"]
        errors[label] = {"center": ev("center"), "multiview": ev("multiview"),
                         "warp": ev("warp"), "full": ev("full") if model == "spp" else None}
        e = errors[label]
        rows.append([label, pct(e["center"]), pct(e["multiview"]), pct(e["warp"]),
                     pct(e["full"])])
        if model == "spp":
            curves[label] = {s: ev("full", s) for s in sizes}
    ctx.results["errors"] = errors
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


def experiment_section(ctx: DemoContext) -> str:
    """This run's errors beside the multi-seed experiment's mean ± sd, and the claims with their
    verdicts (``results/classify.json``): one seed is an example, not a finding."""
    path = Path(ctx.results_dir) / "classify.json"
    head = ["## This run beside the multi-seed experiment", ""]
    if not path.exists():
        msg = (f"No multi-seed results at {path}: run `python -m tinyspp experiment classify` "
               "(about half an hour) to see whether these differences hold over seeds.")
        ctx.say(msg)
        return "\n".join(head + [msg, ""])
    res = json.loads(path.read_text())
    ds = res["datasets"]["synthetic"]
    S = len(ds["seeds"])
    rows = []
    for label, _, _, config in DEMO_RUNS:
        mine = ctx.results["errors"][label]
        per = [s["arms"][config]["error"] for s in ds["seeds"]]
        for view, name in (("center", "centre crop"), ("multiview", "10 views"),
                           ("full", "full image")):
            if mine.get(view) is None:
                continue
            vals = [p[view] for p in per]
            rows.append([label, name, pct(mine[view]), pm(vals),
                         f"{pct(min(vals))}-{pct(max(vals))}"])
    table = markdown_table(["network", "test view", f"this run (seed {ctx.seed}, %)",
                            f"experiment, mean ± sd over {S} seeds (%)", "seed range (%)"], rows)
    claims = claims_markdown(res["claims"])
    verdicts = "\n".join(f"- {c['claim']}: **{c['verdict']}**" for c in res["claims"])
    note = ("" if not ctx.quick else
            "This was a quick run (tiny data and nets): its numbers are not comparable at all. ")
    if res.get("quick"):
        note += "The results file itself is from a quick run: its numbers mean nothing. "
    if res["settings"]["epochs"] != ctx.epochs:
        note += (f"This run trained {ctx.epochs} epochs, the experiment "
                 f"{res['settings']['epochs']}: expect a difference from that alone. ")
    ctx.say("\nthe multi-seed experiment's verdicts (results/classify.json):\n"
            + "\n".join(f"  {c['verdict']:30s} {c['claim']}" for c in res["claims"]))
    return "\n".join(head + [
        f"{note}A single training run is one draw: another seed moves these errors by about the "
        f"spread shown here. The experiment (`{res['command']}`, seeds "
        f"{', '.join(map(str, res['seeds']))}, the same data, schedule and test images) is what "
        "the claims rest on.", "", table, "",
        "The paper's claims, measured over seeds with a paired test on the same images "
        f"(from `{path.name}`):", "", verdicts, "", claims, ""])


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


SECTIONS = [data_section, training_section, evaluation_section, svm_section, experiment_section,
            detection_section]


def run_demo(*, out: str = "runs/demo", quick: bool = False, epochs: int | None = None,
             seed: int = 0, device: str = "cpu", progress: bool = True,
             detect: bool = True, results_dir: str | None = None) -> str:
    """Run every section of :data:`SECTIONS`; write ``out/report.md``; return its path."""
    check_device(device, "demo")
    os.makedirs(out, exist_ok=True)
    ctx = DemoContext(out=out, quick=quick, epochs=epochs or (2 if quick else EPOCHS), seed=seed,
                      device=device, progress=progress, detect=detect,
                      results_dir=str(results_dir or RESULTS))
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
    parser.add_argument("--results", default=None,
                        help="folder of the multi-seed results (default: the repository's "
                             "results/)")
    add_run_options(parser)


def run(args) -> int:
    with blas_threads(args.threads):
        return _run(args)


def _run(args) -> int:
    path = run_demo(out=args.out, quick=args.quick, epochs=args.epochs, seed=args.seed,
                    device=args.device, progress=not args.no_progress,
                    detect=not args.no_detect, results_dir=args.results)
    print(f"report written to {os.path.abspath(path)}")
    return 0
