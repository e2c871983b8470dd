"""What a device tool reports, and the text helpers its parsers share.

``DeviceSample`` is one device at one moment (a monitor row); ``DeviceInventory``
is what the environment capture reads once (model per device, memory, driver);
``DeviceProcess`` and ``ErrorCounters`` are what the campaign's health gates read.
Each tool's module (nvidia_smi.py, ixsmi.py, xpu_smi.py) turns its output into
these; recorded outputs are in tests/fixtures/smi/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

INVALID_READING = 65535  # 0xFFFF: what a tool prints for a sensor it could not read

# A PCI bus id as the tools print it: 00000000:14:00.0
BUS_ID = re.compile(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]")

_UNAVAILABLE = re.compile(
    r"^\[?(n/a|not supported|unknown error|insufficient permissions|gpu is lost|not available)\]?$",
    re.IGNORECASE,
)
_UNIT_SUFFIX = re.compile(r"\s*(MiB|GiB|%|W|C|MHz)$")


@dataclass(frozen=True)
class DeviceSample:
    index: int
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    util_pct: float | None = None
    power_w: float | None = None
    temp_c: float | None = None
    clock_mhz: float | None = None  # the SM (core) clock
    throttle_mask: int | None = None  # NVML clock event reasons bitmask (nvidia_smi.THROTTLE_REASONS); None: not told


@dataclass(frozen=True)
class DeviceProcess:
    """A process that holds a device, as the tool lists it (health gates)."""

    pid: int
    name: str
    used_mib: float | None = None
    device: str | None = None  # index, bus id or UUID, whichever the tool printed

    def describe(self) -> str:
        memory = f"{self.used_mib:.0f} MiB" if self.used_mib is not None else "memory unknown"
        where = f" on device {self.device}" if self.device else ""
        return f"pid {self.pid} ({self.name}, {memory}){where}"


# The error counters a tool's parser reports, by neutral name (ErrorCounters.counts).
UNCORRECTED_VOLATILE = "uncorrected_volatile"  # since the driver was loaded
UNCORRECTED_AGGREGATE = "uncorrected_aggregate"  # the device's lifetime
CORRECTED_VOLATILE = "corrected_volatile"
CORRECTED_AGGREGATE = "corrected_aggregate"


@dataclass(frozen=True)
class ErrorCounters:
    """One device's memory error (ECC) counters; a counter the tool printed as
    N/A or not supported is absent."""

    index: int
    counts: dict[str, int] = field(default_factory=dict)


class DeviceInventory(NamedTuple):
    models: list[str]  # one per device, in the tool's order
    memory_mib: list[float]  # total memory per device, where the tool printed it
    driver: str | None


def reading(text: str) -> float | None:
    """A number from one cell; None for [N/A], [Not Supported] and friends, and
    for the invalid-reading value."""
    value = text.strip()
    if not value or _UNAVAILABLE.match(value):
        return None
    value = _UNIT_SUFFIX.sub("", value)
    try:
        number = float(value)
    except ValueError:
        return None
    return None if number == INVALID_READING else number


def table_cells(line: str) -> list[str]:
    """The cells of one ``| a | b |`` table line; [] for any other line."""
    text = line.strip()
    if not text.startswith("|"):
        return []
    return [cell.strip() for cell in text.strip("|").split("|")]
