"""The process's event log: every event to ``<log-dir>/events_rank<rank>.log``;
rank 0 also echoes to stdout, step events only every ``log_every`` steps."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

from cases.events import EventLog


class Recorder:
    def __init__(self, log_dir: Optional[Path], rank: int, echo: bool) -> None:
        path = log_dir / f"events_rank{rank}.log" if log_dir is not None else None
        self._file = EventLog(path, rank)
        self._echo = EventLog(None, rank, echo=sys.stdout) if echo else None
        self.log_every = 1

    def emit(self, key: str, value: Any = None, time_ms: Optional[int] = None) -> None:
        time_ms = time_ms if time_ms is not None else int(time.time() * 1000)
        self._file.emit(key, value, time_ms=time_ms)
        if self._echo is not None:
            self._echo.emit(key, value, time_ms=time_ms)

    def step(self, step: int, value: Any) -> None:
        """A step event: always to the file, to stdout on the first and every log_every-th."""
        time_ms = int(time.time() * 1000)
        self._file.emit("step", value, time_ms=time_ms)
        if self._echo is not None and (step == 1 or step % self.log_every == 0):
            self._echo.emit("step", value, time_ms=time_ms)

    def close(self) -> None:
        self._file.close()
