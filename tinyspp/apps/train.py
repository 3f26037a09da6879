"""``python -m tinyspp train``: train any configuration and report its test errors.

Examples::

    python -m tinyspp train --data synthetic --schedule multi --sizes 32 26 --epochs 10
    python -m tinyspp train --data digits --model nospp --sizes 32
    python -m tinyspp train --data folder --root ~/caltech101 --max-side 64 --device gpu
    python -m tinyspp train --out runs/train --resume      # continue after an interruption
"""

from __future__ import annotations

import json
import os

from ..data import ImageFolder, digits_splits, split, synthetic_splits
from ..nn import no_spp_net, small_spp_net
from ..train import SCHEDULES, Trainer, blas_threads
from .options import add_run_options


def load_data(name: str, *, root: str | None = None, seed: int = 0, quick: bool = False,
              max_side: int = 64):
    """train / val / test ImageSets of a built-in data set or an image folder."""
    if name == "synthetic":
        counts = (10, 3, 5) if quick else (120, 30, 50)
        return synthetic_splits(*counts, seed=seed)
    if name == "digits":
        return digits_splits(seed=seed, limit=300 if quick else None)
    if root is None:
        raise ValueError("train: --data folder needs --root PATH (a root/<class>/<image> tree)")
    # channels=3: real folders (Caltech-101) mix grey and colour images
    return split(ImageFolder(root, channels=3, max_side=max_side), (0.7, 0.15, 0.15), seed=seed)


def add_arguments(parser) -> None:
    parser.add_argument("--data", choices=["synthetic", "digits", "folder"], default="synthetic")
    parser.add_argument("--root", help="image folder root/<class>/<image> for --data folder")
    parser.add_argument("--max-side", type=int, default=64, help="shrink folder images to this")
    parser.add_argument("--model", choices=["spp", "nospp"], default="spp")
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 2, 1])
    parser.add_argument("--schedule", choices=SCHEDULES, default="multi")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 26],
                        help="single: first; multi: cycled per epoch; random: (lo, hi)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--lr-steps", type=int, nargs="*", default=[],
                        help="0-based epochs from which lr is divided by 10 (same for any size "
                             "schedule; default: none, a constant lr)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/train", help="checkpoint + history folder")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.npz")
    parser.add_argument("--quick", action="store_true", help="tiny data (smoke test)")
    add_run_options(parser)


def run(args) -> int:
    with blas_threads(args.threads):
        return _run(args)


def _run(args) -> int:
    train, val, test = load_data(args.data, root=args.root, seed=args.seed, quick=args.quick,
                                 max_side=args.max_side)
    K, C = train.num_classes, train.channels
    if args.model == "spp":
        net = small_spp_net(K, C, levels=args.levels, seed=args.seed)
    else:
        net = no_spp_net(K, C, input_size=args.sizes[0], seed=args.seed)
        if args.schedule != "single":
            raise SystemExit("train: the no-SPP net accepts one input size; use --schedule single")
    trainer = Trainer(net, train, val, sizes=args.sizes, schedule=args.schedule,
                      batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, lr_steps=tuple(args.lr_steps),
                      seed=args.seed, device=args.device,
                      out_dir=args.out, progress=not args.no_progress)
    trainer.fit(args.epochs, resume=args.resume)
    views = ["center", "multiview", "warp"] + (["full"] if args.model == "spp" else [])
    errors = {v: trainer.evaluate(test, view=v)["error"] for v in views}
    print(f"test error ({len(test)} images, size {trainer.eval_size}): " + ", ".join(
        f"{v} {100 * e:.1f}%" for v, e in errors.items()))
    with open(os.path.join(args.out, "test_errors.json"), "w") as fh:
        json.dump(errors, fh, indent=1)
    return 0
