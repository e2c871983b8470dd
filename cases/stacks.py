"""Ask every training process in this container to dump its Python stacks.

    docker exec <container> python3 -m cases.stacks
    python3 -m cases.stacks --run-id RUN --node-rank K     (bare payload: one node's processes)

sends ``STACKS_SIGNAL`` (SIGUSR1) to each ``python [-u] -m cases.run`` process
it can see (torchrun's workers, or a lone run), never to torchrun's agent. Each
one writes every thread's stack into ``<log-dir>/stacks_rank<rank>.log``
(cases/run.py), so a stalled run shows where each rank hung. Prints one line per
process signalled; exit status 0 when at least one was, 1 when none was found.

Standard library only, Python 3.8 syntax: it runs with the image's interpreter.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

from cases.protocol import STACKS_SIGNAL, is_training_command


def _environ(entry: Path) -> List[str]:
    try:
        return [part.decode("utf-8", "replace") for part in (entry / "environ").read_bytes().split(b"\0")]
    except OSError:
        return []


def training_pids(proc: Path = Path("/proc"), require_env: Optional[List[str]] = None) -> List[int]:
    """Pids of the training processes visible in this pid namespace, this process
    excluded; with `require_env` ("KEY=value" items), only those whose environment
    holds every one of them (one run's processes on a machine shared with others)."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
        if is_training_command(argv) and (not require_env or set(require_env) <= set(_environ(entry))):
            pids.append(int(entry.name))
    return sorted(pids)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cases.stacks")
    parser.add_argument("--run-id", help="only processes of this run (BENCH_RUN_ID in their environment)")
    parser.add_argument("--node-rank", help="and of this node (BENCH_NODE_RANK)")
    args = parser.parse_args(argv)
    required = []
    if args.run_id:
        required.append("BENCH_RUN_ID=" + args.run_id)
    if args.node_rank is not None:
        required.append("BENCH_NODE_RANK=" + args.node_rank)
    signum = getattr(signal, STACKS_SIGNAL)
    signalled = 0
    for pid in training_pids(require_env=required):
        try:
            os.kill(pid, signum)
        except OSError as exc:
            print("pid {}: {} not sent: {}".format(pid, STACKS_SIGNAL, exc.strerror))
            continue
        signalled += 1
        print("pid {}: {} sent".format(pid, STACKS_SIGNAL))
    if not signalled:
        print("no training process (python -m cases.run) found", file=sys.stderr)
    return 0 if signalled else 1


if __name__ == "__main__":
    sys.exit(main())
