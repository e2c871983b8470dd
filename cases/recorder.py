"""The training process's event log (the line format is cases/protocol.py).

Every event goes to ``<log-dir>/events_rank<rank>.log``; rank 0 also echoes to
stdout, step events only every ``log_every`` steps. Logging never raises into
the training loop: a failed write is dropped. Safe to call from several threads
(the heartbeat thread writes too): each line is written whole.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, List, Optional

from cases.protocol import encode_event, event_file_name


class Recorder:
    def __init__(self, log_dir: Optional[Path], rank: int, echo: bool) -> None:
        self.rank = rank
        self.log_every = 1
        self._lock = threading.Lock()
        self._file: Optional[IO[str]] = None
        self._echo: Optional[IO[str]] = sys.stdout if echo else None
        if log_dir is not None:
            path = log_dir / event_file_name(rank)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("a", encoding="utf-8", buffering=1)
            except OSError as exc:
                print(f"event log disabled, cannot open {path}: {exc}", file=sys.stderr)

    def _write(self, streams: List[Optional[IO[str]]], key: str, value: Any, time_ms: Optional[int]) -> None:
        line = encode_event(time_ms if time_ms is not None else int(time.time() * 1000), key, self.rank, value)
        with self._lock:
            for stream in streams:
                if stream is None:
                    continue
                try:
                    stream.write(line)
                    stream.flush()
                except (OSError, ValueError):
                    pass

    def emit(self, key: str, value: Any = None, time_ms: Optional[int] = None) -> None:
        self._write([self._file, self._echo], key, value, time_ms)

    def step(self, step: int, value: Any) -> None:
        """A step event: always to the file, to stdout on the first and every log_every-th."""
        echo = self._echo if step == 1 or step % self.log_every == 0 else None
        self._write([self._file, echo], "step", value, None)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None
