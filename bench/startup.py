"""Start-up that no controller can save: from node 0's container start (its
container.json, State.StartedAt) to rank 0's process_start event, i.e. the
container, torchrun (which imports torch) and the worker's Python starting.
The overhead benches report their figures with and without it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


def container_startup_s(run_out: Path) -> float | None:
    """Seconds from node 0's container start to rank 0's process_start, for a run's
    results folder (results/<run>/<case>/<config>); None when either is missing."""
    node0 = next(iter(sorted(run_out.glob("*_noderank0"))), None)
    if node0 is None:
        return None
    try:
        inspect = json.loads((node0 / "container.json").read_text())
        started = (inspect[0] if isinstance(inspect, list) else inspect)["State"]["StartedAt"]
        events = (node0 / "container" / "events_rank0.log").read_text().splitlines()
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    first = next((json.loads(line.split(":::BENCH", 1)[1]) for line in events
                  if ":::BENCH" in line and '"process_start"' in line), None)
    if first is None:
        return None
    return first["time_ms"] / 1000.0 - _rfc3339(started)


def _rfc3339(text: str) -> float:
    """Docker's StartedAt (nanoseconds, Z) as a Unix time."""
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = float("0." + rest[:9]) if rest else 0.0
    return dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc).timestamp() + fraction
