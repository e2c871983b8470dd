"""Heartbeat events while a rank waits on something slow but alive.

The controller's stall watchdog stops a run when a rank writes no progress
event for ``stall_timeout``. Two waits are long without being hangs: the data
loader's first batch of an epoch (workers starting, a cold file system) and an
evaluation. Around exactly those, the driver holds ``Heartbeat.waiting(phase)``:
one ``heartbeat`` event when the wait begins (``waited_s`` 0), then one every
``interval_s`` from a daemon thread until it ends. Nothing heartbeats anywhere
else, so a rank stuck inside a collective goes quiet and the watchdog sees it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterator, Optional

from cases.protocol import HEARTBEAT_ENV, HEARTBEAT_S
from cases.recorder import Recorder


def heartbeat_interval() -> float:
    """HEARTBEAT_S, or the environment's override (a positive number of seconds)."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return HEARTBEAT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        print("warning: {}={!r} is not a positive number of seconds; using {:g}".format(
            HEARTBEAT_ENV, text, HEARTBEAT_S), file=sys.stderr)
        return HEARTBEAT_S
    return value


class Heartbeat:
    def __init__(self, events: Recorder, interval_s: Optional[float] = None) -> None:
        self.events = events
        self.interval_s = heartbeat_interval() if interval_s is None else interval_s

    @contextlib.contextmanager
    def waiting(self, phase: str) -> Iterator[None]:
        start = time.monotonic()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.interval_s):
                self.events.emit("heartbeat", {"phase": phase, "waited_s": round(time.monotonic() - start, 3)})

        self.events.emit("heartbeat", {"phase": phase, "waited_s": 0})
        thread = threading.Thread(target=beat, name="heartbeat-" + phase, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            # The thread wakes at once; after the join no heartbeat of this wait can follow.
            thread.join()
