"""``python -m tinyspp detect --demo``: the SPP-net vs R-CNN detection demo."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--demo", action="store_true",
                        help="train and evaluate SPP-net and R-CNN detectors on the synthetic set")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration (seconds)")
    parser.add_argument("--out", default="runs/detect", help="output folder (default runs/detect)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")


def run(args) -> int:
    if not args.demo:
        print("python -m tinyspp detect: nothing to do; pass --demo (and --quick for a fast run)")
        return 2
    from .detect_demo import run_detection_demo

    summary, _ = run_detection_demo(args.out, quick=args.quick, seed=args.seed,
                                    device=args.device)
    print(f"wrote {args.out}/results.md, summary.json, detections.png, pr_curves.png")
    return 0
