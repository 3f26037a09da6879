"""tinyspp.scale: the feature store, extraction on Dask, resuming, out-of-core training.

One tiny synthetic set written in VOC layout (6 trainval + 3 test images of ~60 px, a 4-8-8
trunk, a (2, 1) pyramid, at most 40 proposals of one selective-search grouping) serves most
tests; the in-memory detector (tinyspp.detect.detector.SPPDetector) on the same files is the
reference. The VOC fixture's photographs check difficult objects and an image without any.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("zarr")

from tinyspp.detect.data import CLASSES, load_voc, make_detection_set  # noqa: E402
from tinyspp.detect.evaluate import evaluate_detections  # noqa: E402
from tinyspp.detect.voc import write_voc  # noqa: E402
from tinyspp.scale.evaluate import evaluate_store  # noqa: E402
from tinyspp.scale.extract import extract_store, make_trunk  # noqa: E402
from tinyspp.scale.store import FeatureStore, StoreError  # noqa: E402
from tinyspp.scale.train import load_head, train_from_store  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST = 6, 3
WIDTHS, SEED = (4, 8, 8), 0
FEATURES = dict(levels=(2, 1), scales=(48,), input_size=24)
PROPOSALS = dict(mode="single", max_boxes=40)
HEAD = dict(initial_negatives=200, mining_rounds=1, seed=0)
CLASS_ARG = ",".join(CLASSES)


def cli(*argv):
    """argv of the store CLI, as a user types it."""
    return [sys.executable, "-m", "tinyspp", "detect", *argv]


def extract_argv(voc, out, split="trainval", *more):
    return cli("extract", "--data", f"voc:{voc}", "--split", split, "--out", out,
               "--classes", CLASS_ARG, "--widths", *map(str, WIDTHS), "--seed", str(SEED),
               "--scales", "48", "--levels", "2", "1", "--input-size", "24",
               "--max-boxes", "40", "--proposals", "single", "--no-progress", *more)


def extract(voc, out, split="trainval", **kw):
    return extract_store(f"voc:{voc}", out, split=split, widths=WIDTHS, seed=SEED,
                         features=FEATURES, proposals=PROPOSALS, class_names=CLASSES,
                         progress=False, **kw)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """The synthetic set in VOC layout: trainval 000001-000006, test 000007-000009."""
    root = str(tmp_path_factory.mktemp("voc"))
    ds = make_detection_set(N_TRAIN + N_TEST, seed=1, size_range=(48, 64), max_objects=2)
    write_voc(ds, root, splits={"trainval": range(N_TRAIN),
                                "test": range(N_TRAIN, N_TRAIN + N_TEST)})
    return root


@pytest.fixture(scope="module")
def reference(voc):
    """The in-memory detector on the same files: its records, and its test mAP."""
    from tinyspp.detect.detector import SPPDetector

    trunk, _ = make_trunk(None, WIDTHS, SEED)
    det = SPPDetector(trunk, len(CLASSES), proposal_options=PROPOSALS, head_options=HEAD,
                      **FEATURES)
    train = load_voc(voc, "trainval", class_names=CLASSES)
    test = load_voc(voc, "test", class_names=CLASSES)
    records = det.records(train.images, train.boxes, train.labels, difficult=train.difficult)
    det.fit_records(records)
    dets = det.predict(test.images)
    res = evaluate_detections(dets, test.ground_truth(), len(CLASSES), method="11point")
    return {"records": records, "map": res["map"], "detections": dets}


@pytest.fixture(scope="module")
def cluster_store(voc, tmp_path_factory):
    """trainval extracted by a LocalCluster of 2 worker processes, one of which is killed (by
    SIGKILL) as soon as the first image is complete: Dask re-runs its task elsewhere."""
    import psutil

    out = str(tmp_path_factory.mktemp("stores") / "trainval.zarr")
    killed = []

    def kill_a_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            time.sleep(0.02)
            try:
                store = FeatureStore(out)
                done = [i for i in store.image_ids if store.status(i, verify=False) == "complete"]
            except StoreError:
                continue
            if done:
                writer = store.info(done[0])["pid"]
                for p in psutil.Process().children(recursive=True):
                    if p.pid != writer and "python" in p.name().lower() and p.is_running():
                        if any("spawn" in part for part in p.cmdline()):
                            p.kill()
                            killed.append(p.pid)
                            return

    watcher = threading.Thread(target=kill_a_worker, daemon=True)
    watcher.start()
    summary = extract(voc, out, workers=2)
    watcher.join(timeout=5)
    return out, summary, killed


def store_digests(path):
    store = FeatureStore(path)
    return {i: store.info(i)["sha256"] for i in store.image_ids}


# ------------------------------------------------------------------ the store itself
def test_store_layout_marker_and_config(tmp_path):
    from tinyspp.detect.head import make_record

    path = tmp_path / "s"
    store = FeatureStore.create(path, image_ids=["a", "b"], class_names=["x"], config={"k": 1},
                                dtype="float16")
    rec = make_record(np.array([[0., 0, 4, 4]]), np.array([0]), np.array([[1., 1, 6, 6]]),
                      np.array([[0.1, 2.0], [3.0, 1 / 3]], np.float32), n_classes=1)
    store.write("a", rec, (8, 8), arrays={"objects": rec.gt_boxes})
    back = store.read("a")
    assert back.record.features.dtype == np.float16
    assert np.array_equal(back.record.features, rec.features.astype(np.float16))
    assert np.array_equal(back.arrays["objects"], rec.gt_boxes) and back.image_shape == (8, 8)
    assert [store.status(i) for i in ("a", "b")] == ["complete", "missing"]
    assert store.incomplete() == ["b"]
    with pytest.raises(StoreError, match="'b' .* is missing"):
        store.read("b")
    # the same arguments re-open the store; anything else is refused by name
    assert FeatureStore.create(path, image_ids=["a", "b"], class_names=["x"], config={"k": 1},
                               dtype="float16").status("a") == "complete"
    with pytest.raises(StoreError, match=r"differs in: config, config\.k"):
        FeatureStore.create(path, image_ids=["a", "b"], class_names=["x"], config={"k": 2},
                            dtype="float16")
    with pytest.raises(StoreError, match="dtype"):
        FeatureStore.create(path, image_ids=["a", "b"], class_names=["x"], config={"k": 1})
    with pytest.raises(ValueError, match="not one of this store's images"):
        store.write("c", rec, (8, 8))
    with pytest.raises(ValueError, match="image ids"):
        FeatureStore.create(tmp_path / "t", image_ids=["../up"], class_names=["x"], config={})
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore(tmp_path / "nothing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        FeatureStore.create(tmp_path / "full", image_ids=["a"], class_names=["x"], config={})


def test_records_are_reiterable_and_read_one_at_a_time(cluster_store):
    store = FeatureStore(cluster_store[0])
    recs = store.records()
    first = [r.boxes.shape for r in recs]
    assert [r.boxes.shape for r in recs] == first and len(first) == len(recs) == N_TRAIN
    assert iter(recs) is not recs


# ------------------------------------------------------------------ extraction on Dask
def test_cluster_features_equal_in_memory_detector_bitwise(cluster_store, reference):
    out, summary, killed = cluster_store
    assert killed, "the watcher found no worker process to kill"
    assert summary["workers"] == 2 and summary["failed"] == {}
    # The killed worker (one thread) may have marked its image complete before it died, so that
    # Dask's retry finds the marker and skips it: at most one image, never a lost or double one.
    assert summary["computed"] + summary["skipped"] == N_TRAIN and summary["skipped"] <= 1
    store = FeatureStore(out)
    assert store.incomplete() == []
    for rec, ref in zip(store.records(), reference["records"], strict=True):
        for field in ref._fields:
            a, b = getattr(rec, field), getattr(ref, field)
            assert a.dtype == b.dtype and a.shape == b.shape, field
            assert a.tobytes() == b.tobytes(), f"{field} differs from the in-memory detector"


def test_in_process_store_equals_cluster_store(voc, cluster_store, tmp_path):
    summary = extract(voc, str(tmp_path / "s.zarr"), workers=0)
    assert summary["workers"] is None and summary["computed"] == N_TRAIN
    assert store_digests(tmp_path / "s.zarr") == store_digests(cluster_store[0])


def test_existing_cluster_through_scheduler_address(voc, cluster_store, tmp_path):
    """--scheduler ADDRESS: the same tasks on a cluster started elsewhere (here: in this
    process, with a thread worker); the store's images equal the local cluster's."""
    from distributed import LocalCluster

    lines = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        summary = extract(voc, str(tmp_path / "s.zarr"), scheduler=cluster.scheduler_address,
                          max_images=2, log=lines.append)
    assert summary["workers"] == 1 and summary["computed"] == 2
    assert lines[0].startswith(f"Dask: scheduler {cluster.scheduler_address}, 1 workers")
    want = store_digests(cluster_store[0])
    assert store_digests(tmp_path / "s.zarr") == {i: want[i] for i in ("000001", "000002")}


def test_killed_run_resumes_with_the_same_command(voc, cluster_store, reference, tmp_path,
                                                  capsys):
    """A worker process is killed, then the client (SIGKILL, no clean-up); the same command
    finishes the store, recomputing only the unfinished images; train + evaluate then give the
    in-memory detector's mAP."""
    import psutil

    out, summary_file = str(tmp_path / "s.zarr"), str(tmp_path / "summary.json")
    argv = extract_argv(voc, out, "trainval", "--workers", "2", "--summary", summary_file)
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        done, deadline = [], time.time() + 120
        while not done and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
            try:
                store = FeatureStore(out)
                done = [i for i in store.image_ids if store.status(i, verify=False) == "complete"]
            except StoreError:
                pass
        assert done, f"no image completed: {proc.stdout.read().decode() if proc.poll() else ''}"
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if any("spawn" in part for part in p.cmdline())]
        assert workers, "no Dask worker process found"
        workers[0].kill()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)          # the client and everything it started
        proc.wait()
    store = FeatureStore(out)
    before = [i for i in store.image_ids if store.status(i) == "complete"]
    assert 0 < len(before) < N_TRAIN, before
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.load(open(summary_file))
    assert summary["skipped"] == len(before) and summary["computed"] == N_TRAIN - len(before)
    assert store_digests(out) == store_digests(cluster_store[0])

    # out of core training on the resumed store, evaluation on a test store: the same mAP
    # (the same commands, run by the dispatcher in this process)
    from tinyspp.apps.cli import main

    test_out = str(tmp_path / "test.zarr")
    assert main(extract_argv(voc, test_out, "test", "--workers", "0")[3:]) == 0
    head_path, ap_path = str(tmp_path / "head.npz"), str(tmp_path / "ap.json")
    assert main(cli("train", "--store", out, "--out", head_path, "--initial-negatives", "200",
                    "--mining-rounds", "1")[3:]) == 0
    assert main(cli("evaluate", "--store", test_out, "--head", head_path, "--workers", "0",
                    "--out", ap_path, "--no-progress")[3:]) == 0
    assert "mAP" in capsys.readouterr().out
    assert json.load(open(ap_path))["map"] == reference["map"]


def test_train_and_evaluate_in_process_match_the_detector(voc, cluster_store, reference,
                                                          tmp_path):
    head, info = train_from_store(cluster_store[0], tmp_path / "head.npz", log=lambda *a: None,
                                  **HEAD)
    assert info["images"] == N_TRAIN
    extract(voc, str(tmp_path / "test.zarr"), split="test", workers=0)
    res = evaluate_store(tmp_path / "test.zarr", tmp_path / "head.npz", workers=0,
                         progress=False)
    assert res["map"] == reference["map"]
    for (b, s, c), (rb, rs, rc) in zip(res["detections"], reference["detections"], strict=True):
        assert np.array_equal(b, rb) and np.array_equal(s, rs) and np.array_equal(c, rc)
    again = load_head(tmp_path / "head.npz")
    assert np.array_equal(again.svm_w, head.svm_w)
    # the same evaluation as Dask tasks (the head scattered to the workers)
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        on_cluster = evaluate_store(tmp_path / "test.zarr", again, progress=False,
                                    scheduler=cluster.scheduler_address, log=lambda *a: None)
    assert on_cluster["map"] == reference["map"]


def test_real_photographs_with_difficult_objects_match_the_detector(tmp_path):
    """The VOC fixture (JPEG photographs; a difficult coin in 000006 and 000011; 000008 has no
    object): difficult objects are kept for AP but not trained on, as in memory."""
    from tinyspp.detect.detector import SPPDetector
    from tinyspp.detect.voc import VOCDataset

    root = os.path.join(ROOT, "tests", "fixtures", "voc")
    names = ("cat", "coin", "cup", "horse", "motorbike", "person", "rocket")
    kw = dict(widths=WIDTHS, seed=SEED, features=FEATURES, proposals=PROPOSALS,
              class_names=names, progress=False, workers=0)
    extract_store(f"voc:{root}", tmp_path / "tv.zarr", split="trainval", **kw)
    extract_store(f"voc:{root}", tmp_path / "te.zarr", split="test", **kw)
    store = FeatureStore(tmp_path / "te.zarr")
    coins = store.read("000011")
    assert coins.arrays["object_difficult"].sum() == 1
    assert len(coins.record.gt_boxes) == len(coins.arrays["objects"]) - 1   # not trained on
    assert len(store.read("000008").record.gt_boxes) == 0
    head, _ = train_from_store(tmp_path / "tv.zarr", tmp_path / "h.npz", log=lambda *a: None,
                               **HEAD)
    res = evaluate_store(tmp_path / "te.zarr", head, workers=0, progress=False)

    trunk, _ = make_trunk(None, WIDTHS, SEED)
    det = SPPDetector(trunk, len(names), proposal_options=PROPOSALS, head_options=HEAD,
                      **FEATURES)
    train, test = (VOCDataset(root, s, names) for s in ("trainval", "test"))
    det.fit(train.images, train.boxes, train.labels, difficult=train.difficult)
    ref = evaluate_detections(det.predict(test.images), test.ground_truth(), len(names),
                              method="11point")
    assert np.array_equal(res["ap"], ref["ap"], equal_nan=True) and res["map"] == ref["map"]


# ------------------------------------------------------------------ damage is found and repaired
def test_corrupt_and_half_written_images_are_detected_and_recomputed(cluster_store, voc,
                                                                    tmp_path):
    import zarr

    out = str(tmp_path / "damaged.zarr")
    shutil.copytree(cluster_store[0], out)
    store = FeatureStore(out)
    a, b, c = store.image_ids[:3]
    # a: one byte of a feature chunk flipped (bit rot)
    chunk = os.path.join(out, "images", a, "features", "c", "0", "0")
    data = bytearray(open(chunk, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(chunk, "wb").write(bytes(data))
    # b: half-written -- the task died after some arrays, before the marker
    g = zarr.open_group(out, path=f"images/{b}", mode="a")
    del g.attrs["complete"]
    shutil.rmtree(os.path.join(out, "images", b, "overlap"))
    # c: a chunk lost (reads back as zeros)
    os.remove(os.path.join(out, "images", c, "boxes", "c", "0", "0"))
    assert [store.status(i) for i in (a, b, c)] == ["corrupt", "partial", "corrupt"]
    assert store.status(a, verify=False) == "complete"        # only the digest sees bit rot
    with pytest.raises(StoreError, match="corrupt"):
        store.read(a)
    with pytest.raises(StoreError, match="not complete"):
        train_from_store(out, log=lambda *a: None)
    # and the trunk file replaced by another trunk: workers refuse it, extract rewrites it
    from tinyspp.scale.extract import config_token, ensure_image

    make_trunk(None, WIDTHS, SEED + 1)[0].save(os.path.join(out, "trunk.npz"))
    with pytest.raises(StoreError, match="not the trunk"):
        ensure_image(a, out, config_token(store.config))
    # --no-verify trusts the markers: only the half-written image is redone
    summary = extract(voc, out, workers=0, verify=False)
    assert summary["computed"] == summary["recomputed"] == 1
    assert [store.status(i) for i in (a, b, c)] == ["corrupt", "complete", "corrupt"]
    summary = extract(voc, out, workers=0)
    assert summary["computed"] == summary["recomputed"] == 2
    assert summary["skipped"] == N_TRAIN - 2
    assert store_digests(out) == store_digests(cluster_store[0])


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("extra, message", [
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--max-boxes", "7"], "made differently"),
])
def test_bad_extract_arguments_are_refused_by_name(voc, cluster_store, extra, message, capsys):
    from tinyspp.apps.cli import main

    argv = extract_argv(voc, cluster_store[0], "trainval", *extra)[3:]     # after "python -m"
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_data_and_paths_are_refused(voc, tmp_path, capsys):
    from tinyspp.apps.detect_store import main  # the same subcommands, without the dispatcher

    assert main(["extract", "--data", "coco:/x", "--out", str(tmp_path / "s")]) == 2
    assert "unknown data kind 'coco'" in capsys.readouterr().err
    assert main(["extract", "--data", f"voc:{tmp_path}", "--out", str(tmp_path / "s")]) == 2
    assert "VOC layout" in capsys.readouterr().err
    assert main(["extract", "--data", f"voc:{voc}", "--split", "nope",
                 "--out", str(tmp_path / "s")]) == 2
    assert "split 'nope' needs the file" in capsys.readouterr().err
    assert main(["train", "--store", str(tmp_path / "none")]) == 2
    assert "no feature store" in capsys.readouterr().err
    assert main(["evaluate", "--store", str(tmp_path / "none"), "--head", "h.npz"]) == 2
    assert "no feature store" in capsys.readouterr().err


def test_evaluate_refuses_a_head_of_other_classes(cluster_store, tmp_path):
    from tinyspp.scale.train import save_head

    head, _ = train_from_store(cluster_store[0], tmp_path / "h.npz", log=lambda *a: None, **HEAD)
    save_head(head, tmp_path / "other.npz", extra={"class_names": ["a", "b", "c", "d"]})
    with pytest.raises(ValueError, match="trained on classes .* extract both with the same"):
        evaluate_store(cluster_store[0], tmp_path / "other.npz", workers=0, progress=False)


def test_local_cluster_workers_split_on_one_thread_each(monkeypatch):
    """n worker processes fill n CPUs: tinyspp's own splits stay on one thread in each (no
    pinned workers of several processes on the same CPUs), unless the caller chose."""
    from tinyspp.scale.cluster import connect

    def _worker_threads():  # nested: sent to the worker by value
        import os

        from tinyspp.ops import dispatch

        return os.environ.get("TINYSPP_NUM_THREADS"), dispatch.num_threads(), dispatch.pinning()

    monkeypatch.delenv("TINYSPP_NUM_THREADS", raising=False)
    with connect(workers=1, log=lambda line: None) as client:
        assert client.submit(_worker_threads, pure=False).result() == ("1", 1, False)


def test_a_local_gpu_cluster_without_a_device_is_refused():
    from tinyspp.backend import gpu_available
    from tinyspp.scale.cluster import connect

    if gpu_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="connect"), connect(device="gpu"):
        pass


def test_scale_report_says_whether_other_jobs_crowded_the_workers():
    """The scale page's sentence about other jobs follows the measured wall and CPU times
    (a quiet run must not be described as a crowded one, nor the other way round)."""
    from tinyspp.apps.scale_bench import _crowding

    quiet = {"1 worker": {"seconds_median": 0.31, "cpu_seconds_median": 0.32},
             "2 workers": {"seconds_median": 0.33, "cpu_seconds_median": 0.32}}
    assert "agree within 10%" in _crowding(quiet)
    crowded = dict(quiet, **{"2 workers": {"seconds_median": 1.31,
                                           "cpu_seconds_median": 0.39}})
    assert "up to 3.36x" in _crowding(crowded) and "says little" in _crowding(crowded)
