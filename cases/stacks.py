"""Ask every training process in this container to dump its Python stacks.

    docker exec <container> python3 -m cases.stacks

sends ``STACKS_SIGNAL`` (SIGUSR1) to each ``python [-u] -m cases.run`` process
it can see (torchrun's workers, or a lone run), never to torchrun's agent. Each
one writes every thread's stack into ``<log-dir>/stacks_rank<rank>.log``
(cases/run.py), so a stalled run shows where each rank hung. Prints one line per
process signalled; exit status 0 when at least one was, 1 when none was found.

Standard library only, Python 3.8 syntax: it runs with the image's interpreter.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

from cases.protocol import STACKS_SIGNAL, is_training_command


def training_pids(proc: Path = Path("/proc")) -> List[int]:
    """Pids of the training processes visible in this pid namespace, this process excluded."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
        if is_training_command(argv):
            pids.append(int(entry.name))
    return sorted(pids)


def main(argv: Optional[List[str]] = None) -> int:
    del argv  # no options
    signum = getattr(signal, STACKS_SIGNAL)
    signalled = 0
    for pid in training_pids():
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
