"""What one device went through over a run's training window, read back from
its node's monitor.csv: the median SM clock, power, temperature and utilisation
of its samples, and which throttle reasons the tool reported in what share of
them. A straggler's ``why`` quotes ``DeviceConditions.describe()``:

    clock 1410 MHz, 298 W, 83 C, throttled: hw_thermal (60% of samples)

Only nvidia-smi says why clocks are held down (registry.SmiTool.reports_throttle);
for the other tools the line says so rather than claiming no throttle. A vendor
without a device tool (cpu) has host rows only: the line gives the host's CPU.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from harness.devices.nvidia_smi import throttle_reasons
from harness.devices.registry import SMI_TOOLS
from harness.devices.sampler import MonitorRecord, read_monitor

__all__ = ["DeviceConditions", "MonitorRecord", "ThrottleShare", "device_conditions", "read_monitor"]

NO_SAMPLES = "no samples in the training window"
NO_MONITOR_FILE = "no monitor file for this node"
NO_DEVICE_MONITOR = "no device monitor for this vendor"
MASKS_MISSING = "throttle reasons: none recorded in these samples"


def not_reported_by(program: str) -> str:
    return f"throttle reasons: not reported by {program}"


class ThrottleShare(BaseModel):
    """One throttle reason and the share (0..1) of the window's samples that
    carried a mask in which it was active."""

    model_config = ConfigDict(frozen=True)

    name: str
    share: float


class DeviceConditions(BaseModel):
    """A device's conditions over a window; for a vendor without a device tool,
    its host's (device_index None)."""

    model_config = ConfigDict(frozen=True)

    device_index: int | None = None
    tool: str | None = None  # the smi key of the vendor spec; None: no device tool
    samples: int = 0  # the device's rows in the window (host rows when there is no device tool)
    clock_mhz_median: float | None = None
    power_w_median: float | None = None
    temp_c_median: float | None = None
    util_pct_median: float | None = None
    throttle_reasons: tuple[ThrottleShare, ...] = ()  # most frequent first
    throttle_told: bool = False  # the samples carried masks: no reasons then means none was active
    host_cpu_pct_median: float | None = None
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a straggler's ``why``."""
        if self.tool is None:
            cpu = self.host_cpu_pct_median
            host = f"host cpu {cpu:.0f}%" if cpu is not None else "; ".join(self.notes) or "no host cpu reading"
            return f"{NO_DEVICE_MONITOR}; {host}"
        if self.samples == 0:
            return "; ".join(self.notes) or NO_SAMPLES
        parts: list[str] = []
        if self.clock_mhz_median is not None:
            parts.append(f"clock {self.clock_mhz_median:.0f} MHz")
        if self.power_w_median is not None:
            parts.append(f"{self.power_w_median:.0f} W")
        if self.temp_c_median is not None:
            parts.append(f"{self.temp_c_median:.0f} C")
        if self.throttle_told:
            if self.throttle_reasons:
                shares = ", ".join(f"{reason.name} ({reason.share:.0%} of samples)" for reason in self.throttle_reasons)
                parts.append(f"throttled: {shares}")
            else:
                parts.append("no throttle reported")
        parts.extend(self.notes)
        return ", ".join(parts) or "no readings in the samples"


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _shares(masks: list[int]) -> tuple[ThrottleShare, ...]:
    counts: Counter[str] = Counter()
    for mask in masks:
        counts.update(set(throttle_reasons(mask)))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(ThrottleShare(name=name, share=count / len(masks)) for name, count in ranked)


def _host_conditions(window: list[MonitorRecord], notes: list[str]) -> DeviceConditions:
    hosts = [row.host_sample for row in window if row.host_sample is not None]
    if not hosts and not notes:
        notes = [NO_SAMPLES]
    return DeviceConditions(samples=len(hosts), host_cpu_pct_median=_median(host.cpu_pct for host in hosts),
                            notes=tuple(notes))


def device_conditions(csv_path: Path, device_index: int, start_ms: int, stop_ms: int,
                      tool: str | None) -> DeviceConditions:
    """The conditions of device ``device_index`` from the rows of ``csv_path``
    stamped within [start_ms, stop_ms] (epoch ms, the sampler's clock). ``tool``
    is the vendor spec's smi key (None: the vendor has no device tool, and the
    host's CPU is what there is)."""
    notes: list[str] = []
    if csv_path.is_file():
        window = [row for row in read_monitor(csv_path) if start_ms <= row.timestamp_ms <= stop_ms]
    else:
        window = []
        notes.append(NO_MONITOR_FILE)
    if tool is None:
        return _host_conditions(window, notes)
    devices = [row.device for row in window if row.device is not None and row.device.index == device_index]
    if not devices and csv_path.is_file():
        notes.append(NO_SAMPLES)
    known = SMI_TOOLS.get(tool)
    masks = [device.throttle_mask for device in devices if device.throttle_mask is not None]
    if known is None or not known.reports_throttle:
        notes.append(not_reported_by(known.program if known is not None else tool))
    elif devices and not masks:
        notes.append(MASKS_MISSING)  # a file written before the monitor asked, or the driver's [N/A]
    return DeviceConditions(
        device_index=device_index,
        tool=tool,
        samples=len(devices),
        clock_mhz_median=_median(device.clock_mhz for device in devices),
        power_w_median=_median(device.power_w for device in devices),
        temp_c_median=_median(device.temp_c for device in devices),
        util_pct_median=_median(device.util_pct for device in devices),
        throttle_reasons=_shares(masks) if masks else (),
        throttle_told=bool(masks),
        notes=tuple(notes),
    )
