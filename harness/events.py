"""Read the training processes' event logs (format: cases/events.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cases.events import PREFIX

_RANK_FILE_RE = re.compile(r"^events_rank(\d+)\.log$")


@dataclass(frozen=True)
class Event:
    time_ms: int
    key: str
    rank: int
    value: dict[str, Any]


def parse_lines(lines: Iterable[str]) -> list[Event]:
    """Events from any text: lines without the prefix, or broken JSON, are skipped."""
    events: list[Event] = []
    for line in lines:
        start = line.find(PREFIX)
        if start < 0:
            continue
        try:
            record = json.loads(line[start + len(PREFIX):])
            value = record.get("value")
            events.append(Event(int(record["time_ms"]), str(record["key"]), int(record.get("rank", 0)),
                                value if isinstance(value, dict) else {"value": value}))
        except (ValueError, KeyError, TypeError):
            continue
    return events


def read_event_files(folder: Path) -> dict[int, list[Event]]:
    """rank -> its events, from every events_rank<N>.log below folder."""
    by_rank: dict[int, list[Event]] = {}
    for path in sorted(folder.rglob("events_rank*.log")):
        match = _RANK_FILE_RE.match(path.name)
        if match:
            text = path.read_text(encoding="utf-8", errors="replace")
            by_rank.setdefault(int(match.group(1)), []).extend(parse_lines(text.splitlines()))
    return by_rank


def last(events: list[Event], key: str) -> Event | None:
    for event in reversed(events):
        if event.key == key:
            return event
    return None
