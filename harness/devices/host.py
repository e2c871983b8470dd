"""A host's CPU and memory: psutil on the controller's own machine, /proc read
through a Transport elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

KIB_PER_GIB = 1024.0**2
BYTES_PER_GIB = 1024.0**3

PROC_ARGV = ("cat", "/proc/stat", "/proc/meminfo")


@dataclass(frozen=True)
class HostSample:
    cpu_pct: float | None
    mem_used_gib: float | None
    mem_total_gib: float | None


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies from the aggregate ``cpu`` line of /proc/stat."""

    busy: int
    total: int


def sample_local_host() -> HostSample:
    """This machine's CPU and memory, from psutil (CPU % since the previous call)."""
    memory = psutil.virtual_memory()
    return HostSample(
        cpu_pct=psutil.cpu_percent(interval=None),
        mem_used_gib=(memory.total - memory.available) / BYTES_PER_GIB,
        mem_total_gib=memory.total / BYTES_PER_GIB,
    )


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat. Idle time is idle + iowait;
    guest time is already inside user, so only the first eight fields count."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            jiffies = [int(part) for part in parts[1:9]]
            idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)
            total = sum(jiffies)
            return CpuTimes(busy=total - idle, total=total)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def cpu_percent_between(earlier: CpuTimes, later: CpuTimes) -> float | None:
    elapsed = later.total - earlier.total
    if elapsed <= 0:
        return None
    return 100.0 * (later.busy - earlier.busy) / elapsed


def parse_meminfo(text: str) -> tuple[float, float]:
    """(used GiB, total GiB) from /proc/meminfo; used is MemTotal - MemAvailable."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0])
    if "MemTotal" not in values:
        raise ValueError("no MemTotal in /proc/meminfo")
    available = values.get("MemAvailable")
    if available is None:
        available = values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)
    total = values["MemTotal"]
    return (total - available) / KIB_PER_GIB, total / KIB_PER_GIB
