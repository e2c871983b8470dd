"""The event log written by every training process.

One JSON object per line behind a fixed prefix, so the lines can be picked out
of any stdout mix (torchrun, NCCL warnings, tracebacks)::

    :::BENCH {"time_ms": 1764081234567, "key": "step", "rank": 0, "value": {...}}

``time_ms`` is wall-clock milliseconds since the epoch. The harness parses these
lines (harness/events.py); the keys and their values are listed in KEYS.
Logging never raises into the training loop: a failed write is dropped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any

PREFIX = ":::BENCH "

# key -> what its value holds
KEYS: dict[str, str] = {
    "process_start": "{pid, host}; time_ms is when the process started, before any init",
    "config": "the effective, fully layered config (dict)",
    "world": "{world_size, rank, local_rank, node_rank, backend, device, precision}",
    "train_start": "{}",
    "epoch_start": "{epoch}",
    "step": "{epoch, step, samples (global, this step), step_s, core_s}",
    "eval_start": "{epoch}",
    "eval_stop": "{epoch, acc (percent, all-reduced), samples}",
    "epoch_stop": "{epoch}",
    "train_stop": "{samples (global, whole run), steps, stop_reason}",
    "summary": "{core_s, step_s_p50, step_s_p90, step_s_max, peak_mem_gib, mem_total_gib, mem_source}",
    "run_stop": "{status: success|failed, error?}",
}


class EventLog:
    """Writes events to a file and, optionally, to a stream (stdout of rank 0)."""

    def __init__(self, path: Path | None, rank: int, echo: IO[str] | None = None) -> None:
        self.rank = rank
        self._echo = echo
        self._file: IO[str] | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("a", encoding="utf-8", buffering=1)
            except OSError as exc:
                print(f"event log disabled, cannot open {path}: {exc}", file=sys.stderr)

    def emit(self, key: str, value: Any = None, time_ms: int | None = None) -> None:
        record = {
            "time_ms": time_ms if time_ms is not None else int(time.time() * 1000),
            "key": key,
            "rank": self.rank,
            "value": value if value is not None else {},
        }
        try:
            line = PREFIX + json.dumps(record, default=str) + "\n"
        except (TypeError, ValueError):
            line = PREFIX + json.dumps({**record, "value": repr(value)}) + "\n"
        for stream in (self._file, self._echo):
            if stream is None:
                continue
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
