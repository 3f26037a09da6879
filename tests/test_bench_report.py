"""The benchmark report (``tinyspp.bench.report``) on synthetic results files: the repeated-runs
tables (every run in order, the median ratio and the count within the target), the threads
and scaling tables, the second machine's blocks, the convolution profile; and the benchmark
pieces that write those rows (``scaling``, ``profile.profile_conv``, the machine record)."""

import json

import pytest

from tinyspp.bench.report import (
    RUNS,
    RUNS_SAME_HEAP,
    RUNS_UNPINNED,
    render_runs,
    render_runs_same_heap,
    render_runs_unpinned,
)


def write_run(folder, name, ours32, torch32, ours48, torch48):
    rows = [{"section": "training", "workload": f"SGD step, small SPP-net, 32x3x{s}x{s}",
             "ours_ms": o, "torch_ms": t, "note": "", "torch_inproc_ms": None, "unit": "ms"}
            for s, o, t in ((32, ours32, torch32), (48, ours48, torch48))]
    (folder / f"{name}.json").write_text(json.dumps(
        {"started": "2026-12-02T00:00:00+00:00", "load_average": {"start": [0.1]},
         "rows": rows}))


def test_runs_table_lists_runs_in_order_with_median_and_count(tmp_path):
    # ratios at 32 px: 1.2, 1.6, 1.4 -> median 1.4, 2 of 3 within 1.5; at 48 px: 1.0, 2.0, 3.0
    for i, (o32, o48) in enumerate([(12, 10), (16, 20), (14, 30)], start=1):
        write_run(tmp_path, f"{RUNS}{i}", o32, 10.0, o48, 10.0)
    write_run(tmp_path, f"{RUNS}10", 10, 10.0, 10, 10.0)  # ratio 1.0: sorts after run 3
    text = render_runs(tmp_path)
    lines = text.splitlines()
    assert [ln.split("|")[1].strip() for ln in lines[2:6]] == [
        f"`{RUNS}{i}.json`" for i in (1, 2, 3, 10)]
    assert "median ratio 1.30; 3 of 4 runs within 1.5" in lines[-1]  # 1.0, 1.2, 1.4, 1.6
    assert "median ratio 1.50; 2 of 4 runs within 1.5" in lines[-1]  # 1.0, 1.0, 2.0, 3.0
    assert "12.0 / 10.0 ms, 1.20" in lines[2]


def test_runs_table_without_files_says_what_to_run(tmp_path):
    assert "Not measured yet" in render_runs(tmp_path)
    write_run(tmp_path, f"{RUNS}1", 12, 10.0, 12, 10.0)  # not the same-heap set
    assert "Not measured yet" in render_runs_same_heap(tmp_path)
    assert RUNS_SAME_HEAP + "1" in render_runs_same_heap(tmp_path)
    assert "Not measured yet" in render_runs_unpinned(tmp_path)
    write_run(tmp_path, f"{RUNS_UNPINNED}1", 15, 10.0, 12, 10.0)
    assert "15.0 / 10.0 ms, 1.50" in render_runs_unpinned(tmp_path)
    assert "15.0 / 10.0" not in render_runs(tmp_path)


def write_record(folder, name, rows, cores=2, **machine):
    from tinyspp.bench.common import rows_to_json

    (folder / f"{name}.json").write_text(json.dumps(
        {"command": f"python -m tinyspp.bench --out {name}", "started": "t", "seconds": 1.0,
         "machine": {"cpu": "cpu", "cores": cores, "platform": "p", **machine},
         "versions": {"numpy": "2"}, "threads": {"numpy": {"blas": cores}},
         "load_average": {"start": [0.1, 0, 0], "end": [0.2, 0, 0]},
         "rows": rows_to_json(rows)}))


def test_threads_table_divides_one_thread_by_all_threads_for_each_library(tmp_path):
    from tinyspp.bench.common import Row
    from tinyspp.bench.report import render_threads, render_xeon_threads

    step = "SGD step, small SPP-net, 32x3x32x32"
    conv = "conv fwd+bwd x(16, 3, 64, 64) w(32, 3, 5, 5) pad 2"
    assert "Not measured yet" in render_threads(tmp_path)
    write_record(tmp_path, "bench_1thread", [Row("training", step, 30.0, 20.0),
                                             Row("layers", conv, 9.0, 8.0)])
    assert "`results/bench.json`" in render_threads(tmp_path)  # the other file is missing
    write_record(tmp_path, "bench", [
        Row("training", step, 20.0, 10.0), Row("layers", conv, 6.0, None),
        Row("training", "thread hand-off: one empty split over 2 threads", 98.6,
            note="workers pinned", unit="us")])
    text = render_threads(tmp_path)
    assert f"| {step} | 30.0 / 20.0 ms | 1.50x | 20.0 / 10.0 ms | 2.00x |" in text
    assert f"| {conv} | 9.0 / 6.0 ms | 1.50x | - | - |" in text  # torch not measured
    assert "Thread hand-off: one empty split over 2 threads (workers pinned): 99 us." in text
    assert "Not measured yet" in render_xeon_threads(tmp_path)  # its own files, not these


def test_second_machine_blocks_read_the_xeon_files_and_name_the_machine(tmp_path):
    from tinyspp.bench.common import Row
    from tinyspp.bench.report import (
        XEON_RUNS,
        render_setup,
        render_xeon_ideas,
        render_xeon_runs,
        render_xeon_setup,
        render_xeon_table,
        render_xeon_targets,
    )

    conv = "conv fwd+bwd x(8, 96, 27, 27) w(256, 96, 5, 5) pad 2"
    write_record(tmp_path, "bench", [Row("layers", conv, 12.0, 10.0)])
    write_record(tmp_path, "bench_xeon", [
        Row("layers", conv, 15.0, 10.0), Row("ideas", "bands: plain", 3.0),
        Row("ideas", "bands: fast", 1.0)], simd=["fma", "avx512f"],
        blas="openblas 0.3 (SkylakeX kernels)")
    targets = render_xeon_targets(tmp_path)
    assert "| 15.0 / 10.0 ms | 1.50 | **no** |" in targets and "12.0" not in targets
    assert "15.00" in render_xeon_table(tmp_path)
    assert "| bands | 3.00 | 1.00 | 3.00x |" in render_xeon_ideas(tmp_path)
    setup = render_xeon_setup(tmp_path)
    assert "vector units fma, avx512f; BLAS openblas 0.3 (SkylakeX kernels)" in setup
    assert "--out bench_xeon`" in setup and "--out bench`" not in setup
    assert "vector units" not in render_setup(tmp_path)  # an older file records neither
    assert "Not measured yet" in render_xeon_runs(tmp_path)
    write_run(tmp_path, f"{XEON_RUNS}1", 14, 10.0, 12, 10.0)
    assert "14.0 / 10.0 ms, 1.40" in render_xeon_runs(tmp_path)


def test_machine_description_lists_known_vector_units_and_the_blas():
    from tinyspp.bench.common import SIMD_FLAGS, blas_build, cpu_features

    assert set(cpu_features()) <= set(SIMD_FLAGS)
    assert blas_build()  # NumPy's BLAS, as threadpoolctl reports it


def test_scaling_section_times_every_piece_of_a_step_on_one_and_on_all_threads(monkeypatch):
    from types import SimpleNamespace

    from tinyspp.bench import scaling
    from tinyspp.ops import dispatch

    monkeypatch.setattr(scaling, "SIZES", (32,))
    monkeypatch.setattr(scaling, "WARMUP", 1)
    opts = SimpleNamespace(repeats=1, gpu=False)
    with dispatch.using_threads(1):
        assert scaling.run(opts) == []  # one thread: nothing to compare
    with dispatch.using_threads(2):
        rows = scaling.run(opts)
    names = [r.workload for r in rows]
    assert names[0] == "32x3x32x32: 0 Conv2d forward: 1 thread"
    assert names[1] == "32x3x32x32: 0 Conv2d forward: 2 threads"
    assert names[-1] == "32x3x32x32: SGD.step: 2 threads"
    assert "32x3x32x32: loss softmax_cross_entropy: 1 thread" in names
    assert "32x3x32x32: 0 Conv2d backward: 1 thread" in names  # the first layer, no dx
    assert len(rows) == 2 * (2 * 13 + 2) and all(r.ours_ms > 0 for r in rows)
    assert rows[1].note == f"{rows[0].ours_ms / rows[1].ours_ms:.2f}x"


def test_scaling_table_sums_each_kind_of_layer_and_the_whole_step(tmp_path):
    from tinyspp.bench.common import Row
    from tinyspp.bench.report import render_scaling, render_table

    pieces = {"0 Conv2d forward": (4.0, 2.0), "3 Conv2d backward": (6.0, 3.0),
              "1 ReLU forward": (1.0, 1.25), "loss softmax_cross_entropy": (0.5, 0.5),
              "SGD.step": (0.5, 0.5)}
    rows = []
    for piece, (one, many) in pieces.items():
        rows += [Row("scaling", f"32x3x32x32: {piece}: 1 thread", one),
                 Row("scaling", f"32x3x32x32: {piece}: 2 threads", many)]
    write_record(tmp_path, "bench", [])
    assert "no scaling rows" in render_scaling(tmp_path)
    write_record(tmp_path, "bench", rows)
    text = render_scaling(tmp_path)
    assert "| 32x3x32x32 | convolutions | 10.00 | 5.00 | 2.00x |" in text
    assert "| 32x3x32x32 | ReLU | 1.00 | 1.25 | 0.80x |" in text
    assert "| 32x3x32x32 | dropout, loss, SGD update | 1.00 | 1.00 | 1.00x |" in text
    assert text.rstrip().endswith("| 32x3x32x32 | whole step (sum of the pieces) | 12.00 | "
                                  "7.25 | 1.66x |")
    assert "max pooling" not in text  # no such layer in these rows
    assert "scaling" not in render_table(tmp_path)


def test_conv_profile_table_gives_each_steps_share_and_the_gemms_together(tmp_path):
    from tinyspp.bench.common import Row
    from tinyspp.bench.report import render_conv_profile, render_profile

    conv = "conv x(8, 96, 27, 27) w(256, 96, 5, 5)"
    steps = {"whole forward": 30.0, "whole backward": 70.0, "fwd: im2col": 5.0,
             "fwd: GEMMs w @ cols (one per image)": 25.0, "bwd: GEMMs cols @ d (dw)": 30.0,
             "bwd: GEMMs w.T @ d.T (dcols)": 30.0, "bwd: col2im": 10.0}
    write_record(tmp_path, "bench", [Row("profile", "32x3x32x32: 0 Conv2d forward", 3.0)])
    assert "no profile" in render_conv_profile(tmp_path)
    write_record(tmp_path, "bench", [Row("profile", "32x3x32x32: 0 Conv2d forward", 3.0)]
                 + [Row("profile", f"{conv}: {k}", v) for k, v in steps.items()])
    text = render_conv_profile(tmp_path)
    assert f"| {conv} | whole backward | 70.00 |  |" in text
    assert f"| {conv} | bwd: col2im | 10.00 | 10% |" in text
    assert f"| {conv} | all the GEMMs | 85.00 | 85% |" in text
    blocked = f"{conv}, blocked"  # the blocked kernel's pieces: its three kernels together
    pieces = {"whole forward": 20.0, "whole backward": 30.0, "fwd: x to blocks": 1.0,
              "fwd: blocked kernel (+ bias)": 15.0, "bwd: blocked kernel (dx)": 12.0,
              "bwd: blocked kernel (dw)": 13.0, "bwd: db sum": 0.5}
    write_record(tmp_path, "bench", [Row("profile", f"{conv}: {k}", v) for k, v in steps.items()]
                 + [Row("profile", f"{blocked}: {k}", v) for k, v in pieces.items()])
    text = render_conv_profile(tmp_path)
    assert f"| {blocked} | all three kernels | 40.00 | 80% |" in text
    assert f"| {conv} | all the GEMMs | 85.00 | 85% |" in text
    assert "Conv2d forward" not in text
    assert conv not in render_profile(tmp_path)  # the step's profile keeps to the step


@pytest.mark.parametrize("w_shape,one", [((6, 8, 3, 3), "one per image"),
                                         ((6, 64, 3, 3), "one per piece")])
def test_conv_profile_times_every_step_of_an_im2col_convolution(w_shape, one):
    from tinyspp.bench.profile import profile_conv

    got = dict(profile_conv((4, w_shape[1], 5, 5), w_shape, 1, repeats=1))
    label = f"conv x(4, {w_shape[1]}, 5, 5) w{w_shape}"
    assert f"{label}: fwd: GEMMs w @ cols ({one})" in got
    assert {f"{label}: whole forward", f"{label}: bwd: col2im",
            f"{label}: bwd: dw's parts summed and transposed"} <= set(got)
    assert len(got) == 11 and all(ms > 0 for ms in got.values())


def test_handoff_row_times_an_empty_split_only_when_there_are_threads():
    from types import SimpleNamespace

    from tinyspp.bench import training
    from tinyspp.ops import dispatch

    opts = SimpleNamespace(gpu=False, repeats=3)
    with dispatch.using_threads(1):
        assert training.handoff_rows(opts) == []
    with dispatch.using_threads(2):
        (row,) = training.handoff_rows(opts)
    assert row.unit == "us" and row.ours_ms > 0 and row.ratio is None
    assert row.workload == "thread hand-off: one empty split over 2 threads"
    assert row.note.startswith(("workers pinned", "workers not pinned"))
    assert training.handoff_rows(SimpleNamespace(gpu=True, repeats=3)) == []


def test_before_now_table_pairs_workloads_and_divides_now_by_before(tmp_path):
    from tinyspp.bench.common import Row
    from tinyspp.bench.report import XEON, render_xeon_pyramid

    assert "Not measured yet" in render_xeon_pyramid(tmp_path)
    write_record(tmp_path, f"{XEON}_pyramid_before", [Row("pyramid", "region SPP a", 10.0),
                                                       Row("pyramid", "gone", 1.0)])
    write_record(tmp_path, f"{XEON}_pyramid", [Row("pyramid", "region SPP a", 12.5),
                                                Row("pyramid", "new only", 2.0)])
    text = render_xeon_pyramid(tmp_path)
    assert "| region SPP a | 10.0 ms | 12.5 ms | 1.25 |" in text
    assert "gone" not in text and "new only" not in text  # only workloads measured both ways


def test_threads_table_names_each_librarys_own_thread_count(tmp_path):
    from tinyspp.bench.common import Row
    from tinyspp.bench.report import render_threads

    step = "SGD step, small SPP-net, 32x3x32x32"
    write_record(tmp_path, "bench_1thread", [Row("training", step, 30.0, 20.0)], cores=8)
    write_record(tmp_path, "bench", [Row("training", step, 10.0, 5.0)], cores=8)
    record = json.loads((tmp_path / "bench.json").read_text())
    record["threads"].update(tinyspp=4, torch_peer=8)  # tinyspp takes at most 4 threads
    (tmp_path / "bench.json").write_text(json.dumps(record))
    head = render_threads(tmp_path).splitlines()[0]
    assert "tinyspp: 1 / 4 threads" in head and "torch: 1 / 8 threads" in head


def test_step_profile_names_what_each_convolution_runs():
    from tinyspp.bench.profile import profile_step
    from tinyspp.kernels import direct

    if not direct.available():
        pytest.skip(f"the direct kernel does not build here: {direct.why_unavailable()}")
    from tinyspp.kernels import blocked
    from tinyspp.ops import conv

    got = dict(profile_step(32, repeats=1))
    assert all(ms > 0 for ms in got.values())
    keys = set(got)
    # conv1: the kernel's forward and dw, no dx
    assert {"0 Conv2d   fwd: direct kernel (+ bias)", "0 Conv2d   bwd: direct kernel (dw)"} <= keys
    assert not any(k.startswith("0 Conv2d") and "dx" in k for k in got)
    if conv.BLOCKED_IMPL == "auto" and blocked.available() and blocked.fast():
        # conv2 and conv3 (16 and 32 channels): the blocked kernel's pieces
        for layer in (3, 6):
            assert {f"{layer} Conv2d   fwd: blocked kernel (+ bias)",
                    f"{layer} Conv2d   bwd: blocked kernel (dx)",
                    f"{layer} Conv2d   bwd: blocked kernel (dw)"} <= keys
            assert not any(k.startswith(f"{layer} Conv2d") and ("GEMM" in k or "im2col" in k)
                           for k in got)
        return
    # without the blocked kernel: conv2, the direct kernel's forward and dx, dw by GEMM on
    # columns gathered from x; conv3: im2col + GEMM throughout
    assert {"3 Conv2d   fwd: direct kernel (+ bias)", "3 Conv2d   bwd: dx by the direct kernel",
            "3 Conv2d   bwd: GEMM (dw)", "3 Conv2d   bwd: im2col from x (compiled loop)"} <= keys
    assert not any(k.startswith("3 Conv2d") and ("col2im" in k or "dcols" in k) for k in got)
    assert {"6 Conv2d   fwd: im2col (compiled loop)",
            "6 Conv2d   bwd: col2im (compiled loop)"} <= keys
