"""torchrun (torch.distributed.run) that leaves at once when its workers succeeded.

torchrun imports torch, and the interpreter's teardown of it takes 0.5-1.5 s
after the last worker is done, on every node: the run's container or process
group ends that much later. Once torchrun's main returned, its workers are
gone and its logs are written, so the process ends without that teardown. A
failure (an exception, a signal torchrun turned into one) takes the ordinary
path: its traceback and exit status are torchrun's own.

    python -m cases.torchrun [torchrun's arguments]
"""

from __future__ import annotations

import os
import sys

from torch.distributed import run


def main() -> None:
    run.main()  # reads sys.argv[1:], as torchrun does
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
