"""The kernel log, where a device driver reports its errors (NVIDIA's XID
events: ``NVRM: Xid (PCI:0000:01:00): 31, ...``), read with ``dmesg``.

``dmesg`` prints the ring buffer of the running kernel, each line stamped
``[seconds since boot]``; the boot id (``/proc/sys/kernel/random/boot_id``)
tells one boot from the next, so "since the last check" is: a later stamp in
the same boot, or any line in a new boot. Reading it needs root where
``kernel.dmesg_restrict`` is set. Which line marks a driver error is the
tool's data (registry.SmiTool.health.kernel_marker).

Recorded outputs: tests/fixtures/smi/dmesg_*.txt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DMESG_ARGV = ("dmesg",)
BOOT_ID_ARGV = ("cat", "/proc/sys/kernel/random/boot_id")

_STAMP = re.compile(r"^\[\s*(?P<seconds>\d+(?:\.\d+)?)\]\s?(?P<text>.*)$")


@dataclass(frozen=True)
class KernelEvent:
    at_s: float | None  # seconds since boot; None where dmesg printed no stamp
    text: str


def parse_kernel_events(text: str, marker: re.Pattern[str]) -> list[KernelEvent]:
    """The lines of ``dmesg`` output that ``marker`` matches, oldest first."""
    events: list[KernelEvent] = []
    for line in text.splitlines():
        if not marker.search(line):
            continue
        stamped = _STAMP.match(line)
        if stamped is None:
            events.append(KernelEvent(None, line.strip()))
        else:
            events.append(KernelEvent(float(stamped.group("seconds")), stamped.group("text").strip()))
    return events


def newer_than(events: list[KernelEvent], last_at_s: float | None, last_count: int) -> list[KernelEvent]:
    """The events after the last check of the same boot: those stamped after
    ``last_at_s``; for unstamped lines, those beyond the ``last_count`` seen then
    (a ring buffer that wrapped meanwhile can hide some: never more than there are)."""
    if events and all(event.at_s is not None for event in events):
        return [event for event in events if last_at_s is None or (event.at_s or 0.0) > last_at_s]
    return events[last_count:] if len(events) > last_count else []
