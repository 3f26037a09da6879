"""``python -m tinyspp detect <subcommand>``: object detection with SPP-net (and R-CNN).

Subcommands (:data:`SUBCOMMANDS`, one line each, as the top-level commands of
:mod:`tinyspp.apps.cli`):

- ``demo`` -- SPP-net vs R-CNN on the synthetic set, one seed, a report with figures
  (``--demo`` still works: ``python -m tinyspp detect --demo --quick``);
- ``experiment`` -- every method over several seeds, bootstrap statistics and claims, written to
  ``results/detect.json``;
- ``run --data voc:PATH`` -- train and test on a VOC-layout folder (read lazily).

A subcommand is ``"name": ("module:stem", "help")``; the module defines
``add_<stem>_arguments(parser)`` and ``run_<stem>(args) -> int`` and is imported only when that
subcommand (or ``detect --help``) runs.
"""

from __future__ import annotations

import importlib

SUBCOMMANDS = {
    "demo": ("tinyspp.apps.detect_demo:demo",
             "SPP-net vs R-CNN on the synthetic set: one seed, report + figures"),
    "experiment": ("tinyspp.apps.detect_demo:experiment",
                   "every method over several seeds; bootstrap statistics and claims -> "
                   "results/detect.json"),
    "run": ("tinyspp.apps.detect_demo:voc",
            "train and test a detector on a VOC-layout folder (--data voc:PATH)"),
    "extract": ("tinyspp.apps.detect_store:extract", "pooled features into a Zarr store, on Dask"),
    "train": ("tinyspp.apps.detect_store:train", "SVMs + box regressors from a feature store"),
    "evaluate": ("tinyspp.apps.detect_store:evaluate", "VOC AP of a trained head on a test store"),
}


def _target(name: str):
    module, stem = SUBCOMMANDS[name][0].split(":")
    mod = importlib.import_module(module)
    return getattr(mod, f"add_{stem}_arguments"), getattr(mod, f"run_{stem}")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="detect_command", metavar="subcommand")
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _target(name)[0](p)
    # the short spellings: `detect --demo [--quick] [--out DIR] [--seed N] [--device D]` and
    # `detect --data voc:PATH [--out DIR] [--seed N] [--device D]` (= `run --data voc:PATH`)
    parser.add_argument("--demo", action="store_true", help="same as the `demo` subcommand")
    parser.add_argument("--data", dest="legacy_data", metavar="voc:PATH",
                        help="same as `run --data voc:PATH` (trainval -> test)")
    parser.add_argument("--quick", dest="legacy_quick", action="store_true",
                        help="with --demo: a tiny configuration (seconds)")
    parser.add_argument("--out", dest="legacy_out", default=None, metavar="DIR",
                        help="output folder (default runs/detect, with --data runs/detect-run)")
    parser.add_argument("--seed", dest="legacy_seed", type=int, default=0, metavar="N")
    parser.add_argument("--device", dest="legacy_device", choices=("cpu", "gpu"), default="cpu")


def run(args) -> int:
    command = getattr(args, "detect_command", None)
    if command is None and (getattr(args, "demo", False) or getattr(args, "legacy_data", None)):
        command = "demo" if args.demo else "run"
        args.seed, args.device, args.threads = args.legacy_seed, args.legacy_device, 1
        if command == "demo":
            args.quick, args.out = args.legacy_quick, args.legacy_out or "runs/detect"
        else:
            args.data, args.out = args.legacy_data, args.legacy_out or "runs/detect-run"
            args.train_split, args.test_split, args.full = "trainval", "test", False
    if command is None:
        print("python -m tinyspp detect: choose a subcommand: "
              + ", ".join(SUBCOMMANDS) + " (or --demo [--quick], or --data voc:PATH)")
        return 2
    return int(_target(command)[1](args) or 0)
