"""Read the training processes' event logs (the line format is cases/protocol.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cases.protocol import EVENT_FILE_RE, decode_event


@dataclass(frozen=True)
class Event:
    time_ms: int
    key: str
    rank: int
    value: dict[str, Any]


def parse_lines(lines: Iterable[str]) -> list[Event]:
    """Events from any text: lines without the prefix, or broken JSON, are skipped."""
    return [Event(*decoded) for line in lines if (decoded := decode_event(line)) is not None]


def read_event_files(folder: Path) -> dict[int, list[Event]]:
    """rank -> its events, from every events_rank<N>.log below folder."""
    by_rank: dict[int, list[Event]] = {}
    for path in sorted(folder.rglob("events_rank*.log")):
        match = EVENT_FILE_RE.match(path.name)
        if match:
            text = path.read_text(encoding="utf-8", errors="replace")
            by_rank.setdefault(int(match.group(1)), []).extend(parse_lines(text.splitlines()))
    return by_rank


def last(events: list[Event], key: str) -> Event | None:
    for event in reversed(events):
        if event.key == key:
            return event
    return None
