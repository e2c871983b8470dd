"""What the monitors recorded around the run's training window: every node's
monitor.csv read once (harness/devices/sampler.read_monitor), the run's window
(the earliest rank's train_start to the latest rank's train_stop, from the
event logs: harness/core/attribution.train_window) and, per device of the job,
a reading as a (epoch ms, value) series. The energy (harness/core/energy.py)
and the utilisation check (harness/core/device_use.py) read this.

The monitor stamps its rows with the controller's clock and the ranks stamp
their events with their node's: the two are compared as they are (the
preflight checks the hosts' clocks), as the stragglers' conditions do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.core.attribution import train_window
from harness.core.events import Event
from harness.core.results import NodeOutcome
from harness.devices.readings import DeviceSample
from harness.devices.sampler import MonitorRecord, read_monitor

Series = list[tuple[int, float]]  # (epoch ms, value), in the file's order


@dataclass(frozen=True)
class NodeMonitor:
    host: str
    rows: tuple[MonitorRecord, ...]
    devices_used: int  # the job's devices are 0..devices_used-1 (launch makes them visible so)

    def device_indices(self) -> list[int]:
        """The job's devices that have rows, in order; another job's device 7 is not this job's."""
        return sorted({row.device.index for row in self.rows
                       if row.device is not None and row.device.index < self.devices_used})

    def device_series(self, index: int, reading: Callable[[DeviceSample], float | None]) -> Series:
        return [(row.timestamp_ms, value) for row in self.rows
                if row.device is not None and row.device.index == index
                and (value := reading(row.device)) is not None]

    def host_power(self) -> Series:
        """Whole-host power (ipmitool) from the host rows."""
        return [(row.timestamp_ms, row.system_power_w) for row in self.rows
                if row.device is None and row.system_power_w is not None]


@dataclass(frozen=True)
class TrainingMonitors:
    window: tuple[int, int] | None  # epoch ms; None: no rank logged a training window
    nodes: tuple[NodeMonitor, ...]  # the nodes whose monitor.csv came back
    without_file: tuple[str, ...] = ()  # hosts whose monitor.csv did not

    @property
    def window_s(self) -> float | None:
        return (self.window[1] - self.window[0]) / 1000.0 if self.window else None

    def in_window(self, series: Series) -> list[float]:
        if self.window is None:
            return []
        start, stop = self.window
        return [value for stamp, value in series if start <= stamp <= stop]


def run_window(by_rank: dict[int, list[Event]]) -> tuple[int, int] | None:
    """The earliest train_start to the latest train_stop over the ranks (epoch ms)."""
    windows = [window for events in by_rank.values() if (window := train_window(events)) is not None]
    if not windows:
        return None
    return min(start for start, _ in windows), max(stop for _, stop in windows)


def training_monitors(nodes: list[NodeOutcome], by_rank: dict[int, list[Event]],
                      devices_used: int) -> TrainingMonitors:
    """Every collected node's monitor.csv (in its log folder) and the run's window."""
    found: list[NodeMonitor] = []
    without: list[str] = []
    for node in nodes:
        path = Path(node.log_dir) / "monitor.csv"
        if path.is_file():
            found.append(NodeMonitor(node.host, tuple(read_monitor(path)), devices_used))
        else:
            without.append(node.host)
    return TrainingMonitors(run_window(by_rank), tuple(found), tuple(without))
