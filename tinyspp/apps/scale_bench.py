"""``python -m tinyspp.apps.scale_bench``: measure the Dask feature store, project to VOC 2007.

Writes ``results/scale.json`` (rendered into docs/scale.md by ``python -m tinyspp.apps.publish``):

1. the synthetic detection set written in VOC layout (``--images`` trainval + ``--test`` test
   images of 144-168 px), to a temporary folder;
2. ``detect extract`` of trainval into a fresh store with 1 and with 2 local Dask worker
   processes (float32), and once more with 2 workers in float16 (for the size);
3. ``detect train`` on the 2-worker store and ``detect evaluate`` on the test store;
4. from the per-image times, windows, bytes and peak memory: a projection for VOC 2007 at 1, 8
   and 64 workers (assumptions recorded in the file and printed in the docs).

The machine's load (``os.getloadavg``) is recorded before and after: other jobs share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[2] / "results"
VOC2007 = {"trainval": 5011, "test": 4952, "pixels": 500 * 375, "windows": 2000}
PROJECT_WORKERS = (1, 8, 64)
CONFIG = dict(widths=(16, 32, 64), features=dict(levels=(6, 3, 2, 1), scales=(128,),
                                                 input_size=64),
              proposals=dict(max_boxes=2000))


# runs a tinyspp command, then prints its own peak resident memory
_PEAK = ("import resource, sys; from tinyspp.apps.cli import main; rc = main(sys.argv[1:]); "
         "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); "
         "sys.exit(rc)")


def _versions() -> dict:
    import dask
    import distributed
    import skimage
    import sklearn
    import zarr

    return {"python": platform.python_version(), "numpy": np.__version__, "dask": dask.__version__,
            "distributed": distributed.__version__, "zarr": zarr.__version__,
            "scikit-image": skimage.__version__, "scikit-learn": sklearn.__version__}


def _load() -> list:
    return [round(v, 2) for v in os.getloadavg()]


def _per_image(store_path) -> dict:
    from ..scale.store import FeatureStore

    store = FeatureStore(store_path)
    infos = [store.info(i) for i in store.image_ids]
    shapes = [i["image_shape"] for i in infos]
    return {"seconds_median": float(np.median([i["seconds"] for i in infos])),
            "cpu_seconds_median": float(np.median([i["cpu_seconds"] for i in infos])),
            "cpu_seconds_sum": float(np.sum([i["cpu_seconds"] for i in infos])),
            "seconds_mean": float(np.mean([i["seconds"] for i in infos])),
            "windows_mean": float(np.mean([i["windows"] for i in infos])),
            "pixels_mean": float(np.mean([h * w for h, w in shapes])),
            "peak_rss_mb_max": max(i["peak_rss_mb"] for i in infos),
            "workers_seen": len({i["pid"] for i in infos})}


def measure(n_images: int = 24, n_test: int = 8, seed: int = 0, log=print) -> dict:
    """Run the measurements (see the module docstring); return the results dict."""
    from ..detect.data import CLASSES, make_detection_set
    from ..detect.voc import write_voc
    from ..scale.evaluate import evaluate_store
    from ..scale.extract import extract_store
    from ..scale.train import load_head

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = time.perf_counter()
    load_before = _load()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="tinyspp-scale-") as tmp:
        voc = os.path.join(tmp, "voc")
        ds = make_detection_set(n_images + n_test, seed=seed, size_range=(144, 168))
        write_voc(ds, voc, splits={"trainval": range(n_images),
                                   "test": range(n_images, n_images + n_test)})
        common = dict(widths=CONFIG["widths"], seed=seed, features=CONFIG["features"],
                      proposals=CONFIG["proposals"], class_names=CLASSES, progress=False,
                      log=log)
        for name, workers, dtype in (("1 worker", 1, "float32"), ("2 workers", 2, "float32"),
                                     ("2 workers float16", 2, "float16")):
            out = os.path.join(tmp, f"{workers}-{dtype}.zarr")
            t0 = time.perf_counter()
            summary = extract_store(f"voc:{voc}", out, split="trainval", workers=workers,
                                    dtype=dtype, **common)
            summary["wall_seconds"] = round(time.perf_counter() - t0, 3)
            summary.update(_per_image(out))
            summary["dtype"], summary["n_workers"] = dtype, workers
            summary["store_bytes_per_image"] = summary["store_bytes"] / n_images
            # the share of a core each worker got while the tasks ran (other jobs took the rest)
            summary["core_share"] = summary["cpu_seconds_sum"] / (summary["seconds"] * workers)
            summary["store_bytes_per_window"] = (summary["store_bytes_per_image"]
                                                 / summary["windows_mean"])
            summary["failed"] = len(summary["failed"])
            runs[name] = summary
            log(f"{name}: {summary['images_per_second']} images/s, peak "
                f"{summary['peak_rss_mb_max']} MiB per worker")
        train_store = os.path.join(tmp, "2-float32.zarr")
        head_path = os.path.join(tmp, "head.npz")
        # `detect train` in a process of its own, so its peak memory is its own
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", _PEAK, "detect", "train", "--store",
                              train_store, "--out", head_path, "--threads", "1"],
                             check=True, capture_output=True, text=True)
        train_wall = time.perf_counter() - t0
        train_rss_mb = float(run.stdout.split("peak_rss_mb")[-1])
        head = load_head(head_path)
        info = head.saved_extra
        test_store = os.path.join(tmp, "test.zarr")
        extract_store(f"voc:{voc}", test_store, split="test", workers=2, **common)
        res = evaluate_store(test_store, head, workers=2, progress=False, log=log)
    one, two = runs["1 worker"], runs["2 workers"]
    feature_dim = CONFIG["widths"][2] * sum(n * n for n in CONFIG["features"]["levels"])
    return {
        "command": "python -m tinyspp.apps.scale_bench",
        "started": started, "seconds": round(time.perf_counter() - t_start, 1),
        "seeds": [seed], "threads": "1 per worker (OMP_NUM_THREADS=1, Dask's default)",
        "cpu_count": os.cpu_count(), "load_before": load_before, "load_after": _load(),
        "versions": _versions(),
        "data": {"trainval": n_images, "test": n_test, "size_range": [144, 168]},
        "config": {**CONFIG, "feature_dim": feature_dim, "trunk": "random init (seed)"},
        "runs": runs,
        "speedup_2_workers": round(two["images_per_second"] / one["images_per_second"], 3),
        "train": {"seconds": info["seconds"], "images": info["images"],
                  "wall_seconds": round(train_wall, 2), "peak_rss_mb": round(train_rss_mb, 1),
                  "positives": info["positives"], "negatives": info["negatives"]},
        "evaluate": {"map": res["map"], "images": res["images"], "seconds": res["seconds"]},
        "voc2007": VOC2007,
    }


def projection(results: dict) -> dict:
    """VOC 2007 hours and disk at 1, 8, 64 workers, from the measured per-image numbers.

    Assumptions: an image costs the CPU time measured here (what it takes on a core of its
    own: the shared machine's wall times are inflated by the other jobs); that time grows with
    the pixel count (selective search, which dominates, is linear in pixels; the trunk runs at
    a fixed scale, so this overestimates it); workers
    scale linearly (images are independent) or at the 2-worker efficiency measured here; the
    store grows with the windows (about 2,000 per VOC image).
    """
    one = results["runs"]["1 worker"]
    voc = results["voc2007"]
    n = voc["trainval"] + voc["test"]
    seconds_per_image = one["cpu_seconds_median"] * voc["pixels"] / one["pixels_mean"]
    efficiency = min(1.0, results["speedup_2_workers"] / 2)
    out = {"images": n, "seconds_per_image": seconds_per_image, "efficiency": efficiency,
           "workers": {}}
    for w in PROJECT_WORKERS:
        ideal = n * seconds_per_image / w / 3600
        out["workers"][w] = {"hours_linear": ideal,
                             "hours_measured_efficiency": ideal if w == 1 else ideal / efficiency}
    for run, key in (("2 workers", "disk_gb_float32"), ("2 workers float16", "disk_gb_float16")):
        out[key] = n * results["runs"][run]["store_bytes_per_window"] * voc["windows"] / 1e9
    return out


CROWDED = 1.1  # median wall over median CPU time per image above which other jobs crowded in


def _crowding(runs: dict) -> str:
    """What the runs' per-image wall and CPU times say about other jobs on the machine."""
    worst = max(s["seconds_median"] / s["cpu_seconds_median"] for s in runs.values())
    if worst > CROWDED:
        return ("Here an image's median wall time exceeds its CPU time (up to "
                f"{worst:.2f}x): other jobs took part of the cores, so this speed-up says "
                "little about scaling.")
    return ("Here every run's median wall and CPU times per image agree within "
            f"{100 * (CROWDED - 1):.0f}%: other jobs took little of the cores.")


def render(results_dir: Path) -> str:
    """Markdown for the ``scale.measured`` block of docs/scale.md."""
    r = json.loads((Path(results_dir) / "scale.json").read_text())
    p = projection(r)
    runs = r["runs"]
    lines = [
        f"Measured by `{r['command']}` on {r['started'][:10]} ({r['cpu_count']} cores shared "
        f"with other jobs: load average {r['load_before'][0]} before, {r['load_after'][0]} "
        f"after; threads: {r['threads']}). {r['data']['trainval']} trainval images of "
        f"{r['data']['size_range'][0]}-{r['data']['size_range'][1]} px, "
        f"{runs['1 worker']['windows_mean']:.0f} windows per image on average, "
        f"{r['config']['feature_dim']}-d pool5 (trunk widths "
        f"{tuple(r['config']['widths'])}, levels {tuple(r['config']['features']['levels'])}).",
        "",
        "| run | images/s | median s per image (wall / CPU) | share of a core per worker "
        "| peak memory per worker | store per image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in runs.items():
        lines.append(f"| {name} | {s['images_per_second']:.2f} | {s['seconds_median']:.2f} / "
                     f"{s['cpu_seconds_median']:.2f} | {100 * s['core_share']:.0f}% | "
                     f"{s['peak_rss_mb_max']:.0f} MiB | "
                     f"{s['store_bytes_per_image'] / 2**20:.2f} MiB |")
    lines += [
        "",
        f"Speed-up from 1 to 2 workers: {r['speedup_2_workers']:.2f}x. A worker whose tasks "
        f"ran back to back on a core of its own would get 100% in the share column (its tasks' "
        f"CPU time over the run's time); the rest is time between and around the tasks "
        f"(scheduling, writing the store) and, on a loaded machine, CPU that other jobs "
        f"took. {_crowding(runs)} Images per second count "
        f"the tasks only (from the first submission to the last result), not the cluster's "
        f"start; the whole 1-worker command took {runs['1 worker']['wall_seconds']:.0f} s. "
        f"`detect train` on the 2-worker store took {r['train']['seconds']:.1f} s and "
        f"{r['train']['peak_rss_mb']:.0f} MiB at its peak ({sum(r['train']['positives'])} "
        f"positives, {sum(r['train']['negatives'])} negatives cached over the classes); "
        f"evaluation on {r['evaluate']['images']} test images {r['evaluate']['seconds']:.1f} s "
        f"(mAP {100 * r['evaluate']['map']:.1f} with a random trunk: a plumbing check, not a "
        f"detection result).",
        "",
        f"**Projection for VOC 2007** ({p['images']:,} images: 5,011 trainval + 4,952 test), "
        f"from {p['seconds_per_image']:.1f} s per image (the 1-worker median CPU time above times "
        f"the pixel ratio "
        f"{r['voc2007']['pixels']:,} / {runs['1 worker']['pixels_mean']:,.0f}) and "
        f"{r['voc2007']['windows']:,} windows per image:",
        "",
        "| workers | hours (linear scaling) | hours (at the 2-worker efficiency "
        f"{p['efficiency']:.2f}) |",
        "|---:|---:|---:|",
    ]
    for w, h in p["workers"].items():
        lines.append(f"| {w} | {h['hours_linear']:.1f} | {h['hours_measured_efficiency']:.1f} |")
    lines += [
        "",
        f"Disk: {p['disk_gb_float32']:.0f} GB in float32, {p['disk_gb_float16']:.0f} GB in "
        f"float16 (this store's bytes per window, compressed, times 2,000 windows); the "
        f"paper's 12,800-d pool5 would need {12800 / r['config']['feature_dim']:.0f}x that.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyspp.apps.scale_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="trainval images")
    parser.add_argument("--test", type=int, default=8, help="test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "scale.json"))
    args = parser.parse_args(argv)
    results = measure(args.images, args.test, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    print(render(Path(args.out).parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
