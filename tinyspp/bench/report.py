"""Markdown for ``docs/performance.md`` from the benchmark results files (publish renderers).

``results/bench.json`` is written by ``python -m tinyspp.bench`` (the current code) and
``results/bench_before.json`` by the same command run on the code before issue 14 (its ``note``
and ``commit`` say which). Every renderer takes the results folder and returns Markdown; they are
registered in :data:`tinyspp.apps.publish.RENDERERS` as ``bench.*``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import Row, format_table, rows_from_json

QUIET_LOAD = 1.5  # 1-minute load average below which the machine counts as quiet

# the targets: (workload prefix, section, limit of ours / torch)
TARGETS = [
    ("conv fwd+bwd x(16, 3, 64, 64)", "layers", 1.2),
    ("conv fwd+bwd x(8, 96, 27, 27)", "layers", 1.2),
    ("conv fwd+bwd x(8, 256, 13, 13)", "layers", 1.2),
    ("max-pool 3/2", "layers", 0.9),
    ("max-pool 2/2", "layers", 0.9),
    ("SPP (6, 3, 2, 1) fwd+bwd x(32, 256, 13, 13)", "layers", 0.9),
    ("SPP (6, 3, 2, 1) fwd+bwd x(32, 256, 10, 10)", "layers", 0.9),
    ("SGD step, small SPP-net, 32x3x32x32", "training", 1.5),
    ("SGD step, small SPP-net, 32x3x48x48", "training", 1.5),
    ("peak memory, one SGD step, 32x3x32x32", "memory", 2.0),
    ("peak memory, one SGD step, 32x3x48x48", "memory", 2.0),
]


def _load(results_dir: Path, name: str) -> dict | None:
    path = Path(results_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _missing(name: str) -> str:
    return (f"*Not measured yet:* run the command in the text above to write "
            f"`results/{name}.json`, then `python -m tinyspp.apps.publish`.\n")


def _find(rows: list[Row], prefix: str, section: str) -> Row | None:
    return next((r for r in rows if r.section == section and r.workload.startswith(prefix)),
                None)


def render_setup(results_dir: Path) -> str:
    """``bench.setup``: how and where the current numbers were measured (and the old ones)."""
    return _setup_lines(results_dir, (
        ("bench", "now"), ("bench_before", "before"),
        ("bench_1thread", "now, one thread each"),
        ("bench_before_1thread", "before, one thread each"),
        *((name, f"training in a fresh process: {what}") for name, what, _ in FRESH),
        *((p.stem, f"training in a fresh process, repeated ({p.stem})")
          for prefix in (RUNS, RUNS_SAME_HEAP) for p in _run_files(results_dir, prefix))))


def _setup_lines(results_dir: Path, entries) -> str:
    """One list item per ``(results file name, what it is)``: its command, when it ran, the
    load, the machine, the versions, the thread and heap settings of both sides."""
    lines = []
    for name, what in entries:
        d = _load(results_dir, name)
        if d is None:
            lines.append(f"- {what}: " + _missing(name).strip())
            continue
        np_threads = ", ".join(f"{k}: {v}" for k, v in d["threads"]["numpy"].items()) or "none"
        load = d["load_average"]
        code = "; ".join(v for v in (d.get("commit"), d.get("note")) if v)
        machine = d["machine"]
        simd = (f"; vector units {', '.join(machine['simd'])}" if machine.get("simd") else "")
        blas = f"; BLAS {machine['blas']}" if machine.get("blas") else ""
        lines += [
            f"- **{what}** ({code}):"
            f" `{d['command']}`, started {d['started']}, {d['seconds']:.0f} s; "
            f"load average (1/5/15 min) {load['start']} at start, {load['end']} at the end",
            f"  - machine: {machine['cpu']}, {machine['cores']} cores{simd}{blas}; "
            + ", ".join(f"{k} {v}" for k, v in d["versions"].items()),
            f"  - threads: NumPy pools {np_threads}; tinyspp element-wise passes "
            f"{d['threads'].get('tinyspp', '-')}"
            + {True: " (workers pinned to CPUs)", False: " (not pinned)"}.get(
                d["threads"].get("tinyspp_pinned"), "")
            + f"; torch {d['threads'].get('torch_peer', '-')} "
            f"intra-op threads in its own process",
        ]
        heap = d.get("heap")
        if heap:
            lines.append(f"  - glibc heap: tinyspp's process {heap['tinyspp']}; torch's process "
                         f"{heap['torch_peer']}")
    return "\n".join(lines) + "\n"


def render_table(results_dir: Path, name: str = "bench") -> str:
    """``bench.table``: every timed and memory row of the current run (not profile, ideas)."""
    d = _load(results_dir, name)
    if d is None:
        return _missing(name)
    rows = [r for r in rows_from_json(d["rows"])
            if r.section not in ("profile", "scaling", "ideas")]
    return format_table(rows) + "\n"


def render_targets(results_dir: Path, name: str = "bench", before_name: str = "bench_before"):
    """``bench.targets``: each target of issue 14, before and now, and whether it is met."""
    now, before = _load(results_dir, name), _load(results_dir, before_name)
    if now is None:
        return _missing(name)
    rows_now = rows_from_json(now["rows"])
    rows_before = rows_from_json(before["rows"]) if before else []
    head = ("| workload | target (ours/torch) | before: ours / torch | ratio | "
            "now: ours / torch | ratio | met |")
    out = [head, "|---|---|---|---|---|---|---|"]
    for prefix, section, limit in TARGETS:
        r, b = _find(rows_now, prefix, section), _find(rows_before, prefix, section)
        if r is None:
            continue

        def cells(row):
            if row is None or row.torch_ms is None:
                return "-", "-"
            return f"{row.ours_ms:.1f} / {row.torch_ms:.1f} {row.unit}", f"{row.ratio:.2f}"

        met = "-" if r.ratio is None else ("yes" if r.ratio <= limit else "**no**")
        out.append(f"| {r.workload} | <= {limit} | {' | '.join(cells(b))} | "
                   f"{' | '.join(cells(r))} | {met} |")
    for name, d in (("now", now), ("before", before)):
        load = (d or {}).get("load_average") or {}
        worst = max([*(load.get("start") or [0])[:1], *(load.get("end") or [0])[:1]])
        if worst > QUIET_LOAD:
            out.append(f"\n*The {name} run saw a 1-minute load average of up to {worst:.2f} on "
                       f"{d['machine']['cores']} cores (quiet: below {QUIET_LOAD}): other jobs "
                       "shared the CPUs, which slows a library that waits for its threads at "
                       "every barrier more than one that does not, so its ratios are indicative "
                       "only.*")
    return "\n".join(out) + "\n"


# training runs started afresh (python -m tinyspp.bench --only training --only memory ...):
# results file, what differs, and the glibc heap each side had
FRESH = [
    ("bench_fresh", "as shipped", "tinyspp's thresholds (tinyspp.ops.heap) / glibc's defaults"),
    ("bench_fresh_glibc", "TINYSPP_KEEP_FREED=0", "glibc's defaults / glibc's defaults"),
    ("bench_fresh_torch_heap", "--torch-heap tinyspp",
     "tinyspp's thresholds / tinyspp's thresholds"),
]
FRESH_ROWS = [("SGD step, small SPP-net, 32x3x32x32", "training"),
              ("SGD step, small SPP-net, 32x3x48x48", "training"),
              ("page faults per SGD step, 32x3x32x32", "training"),
              ("page faults per SGD step, 32x3x48x48", "training")]


def render_fresh(results_dir: Path) -> str:
    """``bench.fresh``: the SGD steps and their page faults when the benchmark process starts
    with the training section (as a training script does), under three heap settings."""
    head = "| run | glibc heap (tinyspp / torch) | " + " | ".join(
        w.replace("SGD step, small SPP-net, ", "SGD step ").replace(" per SGD step", "")
        + (" (ours / torch)" if w.startswith("page") else " (ours / torch, ratio)")
        for w, _ in FRESH_ROWS) + " |"
    out = [head, "|---|---|" + "---|" * len(FRESH_ROWS)]
    for name, what, heap in FRESH:
        d = _load(results_dir, name)
        if d is None:
            out.append(f"| {what} | {heap} | " + " | ".join("-" for _ in FRESH_ROWS) + " |")
            continue
        rows = rows_from_json(d["rows"])
        cells = []
        for prefix, section in FRESH_ROWS:
            r = _find(rows, prefix, section)
            if r is None or r.torch_ms is None:
                cells.append("-")
            elif r.unit == "faults":
                cells.append(f"{r.ours_ms:.0f} / {r.torch_ms:.0f}")
            else:
                cells.append(f"{r.ours_ms:.1f} / {r.torch_ms:.1f} ms, {r.ratio:.2f}")
        out.append(f"| {what} (`results/{name}.json`) | {heap} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


RUNS = "bench_training_run"  # results/bench_training_run<i>.json: repeated fresh training runs
RUNS_SAME_HEAP = "bench_training_sameheap_run"  # the same with --torch-heap tinyspp
RUNS_UNPINNED = "bench_training_unpinned_run"  # the same with TINYSPP_PIN_THREADS=0


def _run_files(results_dir: Path, prefix: str) -> list[Path]:
    """``results/<prefix><i>.json`` in the order of ``i``."""
    paths = [p for p in Path(results_dir).glob(f"{prefix}*.json") if p.stem[len(prefix):].isdigit()]
    return sorted(paths, key=lambda p: int(p.stem[len(prefix):]))


def render_runs(results_dir: Path, prefix: str = RUNS) -> str:
    """``bench.runs``: the SGD-step target over repeated runs of the training section in fresh
    processes (``results/bench_training_run<i>.json``): each run's ratios, and their median."""
    paths = _run_files(results_dir, prefix)
    if not paths:
        return _missing(f"{prefix}1")
    steps = [w for w, section in FRESH_ROWS if w.startswith("SGD")]
    out = ["| run | started | load (1 min) | " + " | ".join(
        w.replace("SGD step, small SPP-net, ", "SGD step ") + ": ours / torch, ratio"
        for w in steps) + " |", "|---|---|---|" + "---|" * len(steps)]
    ratios = {w: [] for w in steps}
    for path in paths:
        d = json.loads(path.read_text())
        rows = rows_from_json(d["rows"])
        cells = []
        for w in steps:
            r = _find(rows, w, "training")
            if r is None or r.ratio is None:
                cells.append("-")
                continue
            ratios[w].append(r.ratio)
            cells.append(f"{r.ours_ms:.1f} / {r.torch_ms:.1f} ms, {r.ratio:.2f}")
        load = (d.get("load_average") or {}).get("start") or ["-"]
        out.append(f"| `{path.name}` | {d['started']} | {load[0]} | " + " | ".join(cells) + " |")
    limit = dict((prefix, lim) for prefix, _, lim in TARGETS)
    summary = []
    for w in steps:
        vals = sorted(ratios[w])
        if not vals:
            summary.append("-")
            continue
        mid = len(vals) // 2
        median = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
        met = sum(v <= limit[w] for v in vals)
        summary.append(f"median ratio {median:.2f}; {met} of {len(vals)} runs within "
                       f"{limit[w]}")
    out.append("| all runs | | | " + " | ".join(summary) + " |")
    return "\n".join(out) + "\n"


def render_runs_same_heap(results_dir: Path) -> str:
    """``bench.runs_same_heap``: as :func:`render_runs`, torch's process with tinyspp's heap
    settings (``--torch-heap tinyspp``): like for like."""
    return render_runs(results_dir, RUNS_SAME_HEAP)


def render_runs_unpinned(results_dir: Path) -> str:
    """``bench.runs_unpinned``: as :func:`render_runs`, tinyspp's workers not pinned to CPUs
    (``TINYSPP_PIN_THREADS=0``, see ``tinyspp.ops.dispatch.pinning``): what pinning is worth."""
    return render_runs(results_dir, RUNS_UNPINNED)


def render_targets_1thread(results_dir: Path) -> str:
    """``bench.targets_1thread``: the targets with both libraries on one thread
    (``python -m tinyspp.bench --threads 1``): a comparison a busy machine cannot distort."""
    return render_targets(results_dir, "bench_1thread", "bench_before_1thread")


def render_profile(results_dir: Path) -> str:
    """``bench.profile``: the profile rows (where one step's time goes), before and now."""
    now, before = _load(results_dir, "bench"), _load(results_dir, "bench_before")
    if now is None:
        return _missing("bench")
    prof_now = {r.workload: r.ours_ms for r in rows_from_json(now["rows"])
                if r.section == "profile" and not r.workload.startswith(CONV_PROFILE)}
    prof_before = {r.workload: r.ours_ms for r in rows_from_json(before["rows"])
                   if r.section == "profile"
                   and not r.workload.startswith(CONV_PROFILE)} if before else {}
    names = list(prof_before) + [k for k in prof_now if k not in prof_before]
    out = ["| piece of one SGD step (batch 32) | before ms | now ms |", "|---|---|---|"]
    for k in names:
        b, n = prof_before.get(k), prof_now.get(k)
        out.append(f"| {k} | {'-' if b is None else f'{b:.2f}'} | "
                   f"{'-' if n is None else f'{n:.2f}'} |")
    return "\n".join(out) + "\n"


CONV_PROFILE = "conv x("  # profile rows of the layers benchmark's convolutions


def render_conv_profile(results_dir: Path, name: str = "bench") -> str:
    """The layers benchmark's deeper convolutions taken apart (profile rows ``conv x(...)
    w(...): <step>``, by im2col + GEMM, and ``conv x(...) w(...), blocked: <step>``, by the
    blocked kernel; one thread): each step over the whole batch, its share of the whole
    forward + backward, and the GEMMs' (or the three kernels') share together."""
    d = _load(results_dir, name)
    if d is None:
        return _missing(name)
    convs: dict[str, dict[str, float]] = {}
    for r in rows_from_json(d["rows"]):
        if r.section == "profile" and r.workload.startswith(CONV_PROFILE):
            shape, step = r.workload.split(": ", 1)
            convs.setdefault(shape, {})[step] = r.ours_ms
    if not convs:
        return (f"*`results/{name}.json` has no profile of the layers benchmark's "
                "convolutions:* run its command again.\n")
    out = ["| convolution | step (every piece of the batch, 1 thread) | ms | share of the "
           "whole |", "|---|---|---|---|"]
    for shape, steps in convs.items():
        whole = steps.get("whole forward", 0.0) + steps.get("whole backward", 0.0)
        # the core of each way: the GEMMs of im2col + GEMM, the blocked kernel's three kernels
        core = "kernel" if shape.endswith(", blocked") else "GEMM"
        total = sum(v for k, v in steps.items() if core in k)
        for step, ms in steps.items():
            share = "" if step.startswith("whole") else f"{100 * ms / whole:.0f}%"
            out.append(f"| {shape} | {step} | {ms:.2f} | {share} |")
        label = "all three kernels" if core == "kernel" else "all the GEMMs"
        out.append(f"| {shape} | {label} | {total:.2f} | {100 * total / whole:.0f}% |")
    return "\n".join(out) + "\n"


def render_ideas(results_dir: Path, name: str = "bench") -> str:
    """``bench.ideas``: each fast path against its plain twin (section ``ideas``)."""
    now = _load(results_dir, name)
    if now is None:
        return _missing(name)
    rows = [r for r in rows_from_json(now["rows"]) if r.section == "ideas"]
    plain = {r.workload[:-len(": plain")]: r.ours_ms for r in rows
             if r.workload.endswith(": plain")}
    out = ["| idea (plain twin -> fast path) | plain ms | fast ms | speed-up |",
           "|---|---|---|---|"]
    for r in rows:
        if r.workload.endswith(": fast"):
            name = r.workload[:-len(": fast")]
            p = plain.get(name)
            if p is not None:
                out.append(f"| {name} | {p:.2f} | {r.ours_ms:.2f} | {p / r.ours_ms:.2f}x |")
    return "\n".join(out) + "\n"


def render_threads(results_dir: Path, name: str = "bench", one_name: str = "bench_1thread"):
    """``bench.threads``: what a second thread buys each library, from the default run
    (``name``: every thread of the machine) and the one-thread run (``one_name``) of the same
    code: each library's time on one thread and on all of them and the speed-up between, for
    every target that is a time, then the cost of one hand-off to tinyspp's threads."""
    many, one = _load(results_dir, name), _load(results_dir, one_name)
    if many is None or one is None:
        return _missing(name if many is None else one_name)
    rows_many, rows_one = rows_from_json(many["rows"]), rows_from_json(one["rows"])
    threads = many.get("threads", {})
    ours_n = threads.get("tinyspp") or many["machine"]["cores"]
    torch_n = threads.get("torch_peer") or many["machine"]["cores"]
    out = [f"| workload | tinyspp: 1 / {ours_n} threads | speed-up | torch: 1 / {torch_n} "
           "threads | speed-up |", "|---|---|---|---|---|"]
    for prefix, section, _ in TARGETS:
        a, b = _find(rows_one, prefix, section), _find(rows_many, prefix, section)
        if a is None or b is None or a.unit != "ms":
            continue
        cells = []
        for x, y in ((a.ours_ms, b.ours_ms), (a.torch_ms, b.torch_ms)):
            cells += (["-", "-"] if not (x and y) else
                      [f"{x:.1f} / {y:.1f} ms", f"{x / y:.2f}x"])
        out.append(f"| {b.workload} | " + " | ".join(cells) + " |")
    handoff = _find(rows_many, "thread hand-off", "training")
    if handoff is not None:
        out.append(f"\n{handoff.workload[0].upper()}{handoff.workload[1:]} "
                   f"({handoff.note}): {handoff.ours_ms:.0f} us.")
    return "\n".join(out) + "\n"


# the scaling section's layers, grouped by kind (forward and backward together)
SCALING_GROUPS = [("Conv2d", "convolutions"), ("ReLU", "ReLU"), ("MaxPool2d", "max pooling"),
                  ("SpatialPyramidPooling", "SPP layer"), ("Linear", "fully connected"),
                  ("", "dropout, loss, SGD update")]


def render_scaling(results_dir: Path, name: str = "bench") -> str:
    """Each kind of layer's time inside real SGD steps on one thread and on
    all of tinyspp's threads (section ``scaling``, summed over the layers of that kind, forward
    and backward), the speed-up, and the whole step (the sum of its pieces)."""
    d = _load(results_dir, name)
    if d is None:
        return _missing(name)
    rows = [r for r in rows_from_json(d["rows"]) if r.section == "scaling"]
    if not rows:
        return (f"*`results/{name}.json` has no scaling rows:* run its command again "
                "(the section `scaling` needs more than one thread).\n")
    n = rows[1].workload.rsplit(": ", 1)[1]  # "<n> threads"
    whole = "whole step (sum of the pieces)"
    sums: dict[str, dict[str, list[float]]] = {}  # size -> group -> [1 thread, n threads]
    for r in rows:
        size, piece, threads = r.workload.split(": ")
        kind = piece.split()[1] if piece[0].isdigit() else ""
        group = next(label for key, label in SCALING_GROUPS if key == kind or not key)
        groups = sums.setdefault(size, {label: [0.0, 0.0] for _, label in SCALING_GROUPS}
                                 | {whole: [0.0, 0.0]})
        for key in (group, whole):
            groups[key][0 if threads == "1 thread" else 1] += r.ours_ms
    out = [f"| step | pieces | 1 thread ms | {n} ms | speed-up |", "|---|---|---|---|---|"]
    for size, groups in sums.items():
        for group, (one, many) in groups.items():
            if many:
                out.append(f"| {size} | {group} | {one:.2f} | {many:.2f} | "
                           f"{one / many:.2f}x |")
    return "\n".join(out) + "\n"


# --- a second machine -----------------------------------------------------------------------
#
# The same commands on another machine of the project (an Intel Xeon with AVX-512, where
# OpenBLAS and torch's oneDNN both take their AVX-512 kernels), written to results/bench_xeon*.

XEON = "bench_xeon"
XEON_RUNS = "bench_xeon_training_run"
XEON_RUNS_SAME_HEAP = "bench_xeon_training_sameheap_run"


def render_xeon_setup(results_dir: Path) -> str:
    """``bench.xeon_setup``: how and where the second machine's numbers were measured."""
    return _setup_lines(results_dir, (
        (XEON, "now"), (f"{XEON}_before", "before"),
        (f"{XEON}_pyramid", "region SPP, now"), (f"{XEON}_pyramid_before", "region SPP, before"),
        (f"{XEON}_1thread", "now, one thread each"),
        (f"{XEON}_before_1thread", "before, one thread each"),
        *((p.stem, f"training in a fresh process, repeated ({p.stem})")
          for prefix in (XEON_RUNS, XEON_RUNS_SAME_HEAP)
          for p in _run_files(results_dir, prefix))))


def render_xeon_targets(results_dir: Path) -> str:
    """``bench.xeon_targets``: :func:`render_targets` on the second machine."""
    return render_targets(results_dir, XEON, f"{XEON}_before")


def render_xeon_targets_1thread(results_dir: Path) -> str:
    """``bench.xeon_targets_1thread``: the same, both libraries on one thread."""
    return render_targets(results_dir, f"{XEON}_1thread", f"{XEON}_before_1thread")


def render_xeon_table(results_dir: Path) -> str:
    """``bench.xeon_table``: every timed and memory row of the second machine's run."""
    return render_table(results_dir, XEON)


def render_xeon_ideas(results_dir: Path) -> str:
    """``bench.xeon_ideas``: the ideas table of the second machine's run."""
    return render_ideas(results_dir, XEON)


def render_xeon_threads(results_dir: Path) -> str:
    """``bench.xeon_threads``: :func:`render_threads` on the second machine."""
    return render_threads(results_dir, XEON, f"{XEON}_1thread")


def render_xeon_conv_profile(results_dir: Path) -> str:
    """``bench.xeon_conv_profile``: :func:`render_conv_profile` on the second machine."""
    return render_conv_profile(results_dir, XEON)


def render_xeon_scaling(results_dir: Path) -> str:
    """``bench.xeon_scaling``: :func:`render_scaling` on the second machine."""
    return render_scaling(results_dir, XEON)


def render_xeon_runs_same_heap(results_dir: Path) -> str:
    """``bench.xeon_runs_same_heap``: the repeated fresh training runs on the second machine,
    torch's process with tinyspp's heap settings (like for like)."""
    return render_runs(results_dir, XEON_RUNS_SAME_HEAP)


def render_before_now(results_dir: Path, name: str, before_name: str) -> str:
    """Every row of ``results/<name>.json`` with our time in ``results/<before_name>.json``
    beside it (the same workload in the code before issue 14) and now over before: whether
    anything got slower."""
    now, before = _load(results_dir, name), _load(results_dir, before_name)
    if now is None or before is None:
        return _missing(name if now is None else before_name)
    old = {r.workload: r for r in rows_from_json(before["rows"])}
    out = ["| workload | before | now | now / before |", "|---|---|---|---|"]
    for r in rows_from_json(now["rows"]):
        b = old.get(r.workload)
        if b is None:
            continue
        out.append(f"| {r.workload} | {b.ours_ms:.1f} {r.unit} | {r.ours_ms:.1f} {r.unit} | "
                   f"{r.ours_ms / b.ours_ms:.2f} |")
    return "\n".join(out) + "\n"


def render_xeon_pyramid(results_dir: Path) -> str:
    """``bench.xeon_pyramid``: the region-SPP benchmark before issue 14 and now, on the second
    machine (``--only pyramid``, the same harness on both codes)."""
    return render_before_now(results_dir, f"{XEON}_pyramid", f"{XEON}_pyramid_before")


def render_xeon_runs(results_dir: Path) -> str:
    """``bench.xeon_runs``: the repeated fresh training runs on the second machine."""
    return render_runs(results_dir, XEON_RUNS)
