"""The benchmark report's repeated-runs table (``tinyspp.bench.report.render_runs``) on
synthetic results files: every run listed in order, the median ratio and the count of runs
within the target computed from them."""

import json

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
