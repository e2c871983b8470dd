"""One long-lived command per host whose output the controller listens to.

A NodeStream keeps `argv` running on its host through a Transport's stream():
when the command ends or its connection drops, it is opened again after a
pause, until close(). Each complete output line goes to `on_line`; the stream
remembers when it last heard anything from the host, which is what the
lost-host rule reads: a stream that is down, or up and silent, is silence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.backends.transport import Transport
from harness.errors import HarnessError

REOPEN_S = 1.0  # pause before a stream that ended or dropped is opened again
_MAX_PARTIAL = 1 << 20  # a line longer than this is dropped, not buffered without end


@dataclass(frozen=True)
class StreamStatus:
    up: bool  # the command runs and its connection is open, as far as we know
    last_heard: float  # time.monotonic() of the last output (or of the first opening)
    reopened: int  # how often it was opened again after ending or dropping
    why_down: str  # why it last ended or dropped; "" when it never did


class NodeStream:
    def __init__(self, name: str, transport: Transport, argv: list[str], on_line: Callable[[str], None],
                 on_change: Callable[[str], None], reopen_s: float = REOPEN_S) -> None:
        self.name = name
        self._transport = transport
        self._argv = argv
        self._on_line = on_line
        self._on_change = on_change
        self._reopen_s = reopen_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._partial = b""
        self._up = False
        self._last_heard = time.monotonic()
        self._reopened = 0
        self._why_down = ""
        self._thread = threading.Thread(target=self._run, name=f"stream-{name}", daemon=True)

    def start(self) -> NodeStream:
        self._thread.start()
        return self

    def status(self) -> StreamStatus:
        with self._lock:
            return StreamStatus(self._up, self._last_heard, self._reopened, self._why_down)

    def stop_soon(self) -> None:
        """Ask the stream to end (close() waits for it)."""
        self._stop.set()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        opened = 0
        while not self._stop.is_set():
            with self._lock:
                self._up = True
                self._partial = b""
                if opened:
                    self._reopened += 1
            opened += 1
            try:
                code = self._transport.stream(self._argv, self._feed, self._stop)
                why = f"the command ended (exit {code})"
            except HarnessError as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            except Exception as exc:  # never let the listener thread die silently
                why = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                break
            with self._lock:
                self._up = False
                self._why_down = why
            self._on_change(f"{self.name} stream ended ({why}); reopening it")
            self._stop.wait(self._reopen_s)

    def _feed(self, data: bytes) -> None:
        with self._lock:
            self._last_heard = time.monotonic()
            buffered = self._partial + data
            *lines, rest = buffered.split(b"\n")
            self._partial = rest if len(rest) <= _MAX_PARTIAL else b""
        for line in lines:
            self._on_line(line.decode("utf-8", "replace").rstrip("\r"))
