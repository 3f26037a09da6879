"""The torch side of the benchmarks: ``python -m tinyspp.bench.peer [--threads N]``.

Started by :class:`tinyspp.bench.common.Peer`; reads one JSON request per line on stdin and
answers one JSON line on stdout, so it sits idle (blocked on the pipe) while the parent process
times NumPy. Requests name a workload ``(module, builder, args)``; see ``tinyspp.bench.common``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .common import build, heap_status, times_ms


def serve(threads: int | None = None) -> None:
    """The peer's loop: read one JSON request per line, answer one JSON line."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    steps = {}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "info":
                result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                          "interop_threads": torch.get_num_interop_threads(), "pid": os.getpid(),
                          "heap": heap_status()}
            else:
                key = json.dumps(msg["spec"])
                if key not in steps:
                    steps[key] = build(torch, msg["spec"])
                if msg["op"] == "times":
                    result = times_ms(steps[key], msg["repeats"], msg["warmup"])
                else:
                    result = steps[key]()
        except Exception as err:  # the parent shows it; the peer keeps serving
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
            continue
        print(json.dumps({"result": result}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinyspp.bench.peer", description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    serve(p.parse_args(argv).threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
