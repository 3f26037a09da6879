"""Command line: ``python -m tinyspp <command> ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only maps names to modules, importing just the one that runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("tinyspp.apps.demo", "the main job: train, evaluate and report on built-in data"),
    "train": ("tinyspp.apps.train", "train an SPP-net or the no-SPP baseline (any schedule)"),
    "experiment": ("tinyspp.apps.experiments",
                   "experiment classify: the paper's Tables 2-4 in small"),
    "detect": ("tinyspp.apps.detect", "object detection: demo, experiment, run --data voc:PATH"),
    "grade": ("tinyspp.apps.grade", "grade exercise files (FOLDER/NAME.py) with property tests"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tinyspp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
