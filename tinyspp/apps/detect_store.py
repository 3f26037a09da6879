"""``python -m tinyspp detect extract | train | evaluate``: detection at data-set scale on Dask.

Examples::

    # features of every trainval image into a store (a local Dask cluster sized to the machine)
    python -m tinyspp detect extract --data voc:VOC2007 --split trainval --out runs/trainval.zarr
    # the same command again after a crash: only images not marked complete are computed
    python -m tinyspp detect extract --data voc:VOC2007 --split trainval --out runs/trainval.zarr
    python -m tinyspp detect extract --data voc:VOC2007 --split test --out runs/test.zarr \\
        --scheduler tcp://10.0.0.1:8786                   # an existing cluster
    python -m tinyspp detect train --store runs/trainval.zarr          # -> STORE/head.npz
    python -m tinyspp detect evaluate --store runs/test.zarr --head runs/trainval.zarr/head.npz

See docs/scale.md. Each subcommand is a pair ``add_*_arguments(parser)`` / ``run_*(args)`` in
:data:`SUBCOMMANDS`; ``python -m tinyspp.apps.detect_store`` runs them without the ``detect``
dispatcher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .options import add_run_options


def _where(parser) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="local Dask worker processes (default: one per core, or per GPU "
                             "with --device gpu; 0: run in this process, no Dask)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="use the running Dask cluster at ADDRESS (tcp://host:8786)")
    parser.add_argument("--no-verify", action="store_true",
                        help="trust the completion markers without re-checking the digests")


def add_extract_arguments(parser) -> None:
    parser.add_argument("--data", required=True, metavar="voc:PATH",
                        help="a VOC-layout folder (Annotations/, JPEGImages/, ImageSets/Main/)")
    parser.add_argument("--split", default="trainval", help="ImageSets/Main/<split>.txt")
    parser.add_argument("--out", required=True, metavar="STORE", help="the store folder")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names, fixing their order (default: the "
                             "sorted names in the annotations); give train and test the same")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--trunk", default=None, metavar="CHECKPOINT",
                        help="a small_spp_net checkpoint (python -m tinyspp train); default: a "
                             "randomly initialised trunk (--seed, --widths)")
    parser.add_argument("--widths", type=int, nargs=3, default=[16, 32, 64])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", type=int, nargs="+", default=[128])
    parser.add_argument("--levels", type=int, nargs="+", default=[6, 3, 2, 1])
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--max-boxes", type=int, default=2000, help="proposals per image")
    parser.add_argument("--proposals", choices=["fast", "single"], default="fast",
                        help="selective search mode: 'fast' (the paper's) or one grouping")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--summary", default=None, metavar="JSON",
                        help="also write the run's summary (timings, memory, sizes) here")
    _where(parser)
    add_run_options(parser)


def add_train_arguments(parser) -> None:
    parser.add_argument("--store", required=True, help="a complete store (detect extract)")
    parser.add_argument("--out", default=None, metavar="HEAD",
                        help="where to save the head (default STORE/head.npz)")
    parser.add_argument("--svm-C", type=float, default=1.0)
    parser.add_argument("--mining-rounds", type=int, default=1)
    parser.add_argument("--initial-negatives", type=int, default=1000)
    parser.add_argument("--no-bbox-regression", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-verify", action="store_true",
                        help="trust the completion markers without re-checking the digests")
    add_run_options(parser)


def add_evaluate_arguments(parser) -> None:
    parser.add_argument("--store", required=True, help="a complete test store (detect extract)")
    parser.add_argument("--head", required=True, help="a head saved by detect train")
    parser.add_argument("--method", choices=["11point", "area"], default="11point",
                        help="VOC 2007's 11-point AP (default) or the area (VOC 2010+)")
    parser.add_argument("--out", default=None, metavar="JSON", help="write AP per class here")
    _where(parser)
    add_run_options(parser)


def _fail(command: str, err: Exception) -> int:
    print(f"python -m tinyspp detect {command}: error: {err}", file=sys.stderr)
    return 2


def _check_where(args, command):
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 = in-process), got {args.workers}")
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("give --workers (a local cluster) or --scheduler (an existing one), "
                         "not both")


def run_extract(args) -> int:
    from ..scale.extract import extract_store
    from ..scale.store import StoreError
    from ..train import blas_threads

    try:
        _check_where(args, "extract")
        classes = None if args.classes is None else [c.strip() for c in args.classes.split(",")]
        with blas_threads(args.threads):
            summary = extract_store(
                args.data, args.out, split=args.split, weights=args.trunk, widths=args.widths,
                seed=args.seed, features={"scales": args.scales, "levels": args.levels,
                                          "input_size": args.input_size},
                proposals={"max_boxes": args.max_boxes, "mode": args.proposals},
                dtype=args.dtype, device=args.device,
                workers=args.workers, scheduler=args.scheduler, verify=not args.no_verify,
                max_images=args.max_images, class_names=classes,
                progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError, StoreError, ConnectionError) as err:
        return _fail("extract", err)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the images already marked complete in {args.out} are kept; run "
              f"the same command again to finish the rest", file=sys.stderr)
        return 130
    done = summary["images"] - len(summary["failed"])
    print(f"{args.out}: {done}/{summary['images']} images complete ({summary['computed']} "
          f"computed, {summary['recomputed']} of them partial or corrupt before, "
          f"{summary['skipped']} already complete); {summary['store_bytes'] / 2**20:.1f} MiB")
    if args.summary:
        with open(args.summary, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 1 if summary["failed"] else 0


def run_train(args) -> int:
    from ..scale.store import StoreError
    from ..scale.train import train_from_store
    from ..train import blas_threads

    try:
        with blas_threads(args.threads):
            train_from_store(args.store, args.out, verify=not args.no_verify,
                             svm_C=args.svm_C, mining_rounds=args.mining_rounds,
                             initial_negatives=args.initial_negatives,
                             bbox_regression=not args.no_bbox_regression, seed=args.seed)
    except (ValueError, TypeError, FileNotFoundError, StoreError) as err:
        return _fail("train", err)
    return 0


def run_evaluate(args) -> int:
    from ..scale.evaluate import evaluate_store
    from ..scale.store import StoreError

    try:
        _check_where(args, "evaluate")
        res = evaluate_store(args.store, args.head, workers=args.workers,
                             scheduler=args.scheduler, method=args.method,
                             verify=not args.no_verify, progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError, StoreError, ConnectionError) as err:
        return _fail("evaluate", err)
    for name, ap in zip(res["class_names"], res["ap"]):
        print(f"  {name:>16s}  AP {100 * ap:5.1f}")
    print(f"mAP {100 * res['map']:.2f} on {res['images']} images ({args.method})")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({k: res[k] for k in ("ap", "map", "class_names", "images", "seconds")},
                      fh, indent=1)
    return 0


#: name -> (add_arguments, run, help): what ``python -m tinyspp detect NAME`` dispatches to.
SUBCOMMANDS = {
    "extract": (add_extract_arguments, run_extract,
                "pooled features of every image into a Zarr store, on Dask (resumable)"),
    "train": (add_train_arguments, run_train,
              "SVMs with hard-negative mining + box regressors, reading the store image by image"),
    "evaluate": (add_evaluate_arguments, run_evaluate,
                 "VOC AP of a trained head on a test store, detection in parallel"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyspp.apps.detect_store",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="sub", metavar="subcommand", required=True)
    for name, (add, _, help_text) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return SUBCOMMANDS[args.sub][1](args)


if __name__ == "__main__":
    sys.exit(main())
