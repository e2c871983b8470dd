"""What the run cost in energy: the monitors' power samples integrated over the
training window (harness/devices/integrate.py), per device, and per 1,000
trained samples.

Where the vendor's device tool reports power (the registry's tool: nvidia-smi
power.draw, ixsmi, xpu_smi), the run's energy is the sum over the job's devices
on every node. Whole-host power from the BMC (ipmitool dcmi, the host rows of
monitor.csv) is listed per host as device ``host`` but not added to that sum: it
contains the devices' own power, and the CPUs, memory and fans besides. Only
where no device tool reports power is the run's energy the hosts' (``source``
says which it is). Where nothing reports power, ``energy_j`` is None and
``missing`` says why.
"""

from __future__ import annotations

from harness.core.monitor_window import Series, TrainingMonitors
from harness.core.results import DevicePower, Energy
from harness.core.vendor import VendorSpec
from harness.devices.integrate import integrate_power
from harness.devices.registry import SMI_TOOLS

HOST_DEVICE = "host"  # DevicePower.device of a whole-host reading
# Longer silences between two samples are not bridged. At the monitor's 1 s
# interval a few missed rounds, or one device tool call that hit the sampler's
# 10 s timeout, still are.
MAX_GAP_S = 12.0
HOST_POWER_TOOL = "ipmitool"


def _program(vendor: VendorSpec) -> str | None:
    if vendor.smi is None:
        return None
    tool = SMI_TOOLS.get(vendor.smi)
    return tool.program if tool is not None else vendor.smi


def _device_power(monitors: TrainingMonitors, host: str, device: str, series: Series,
                  notes: list[str]) -> DevicePower | None:
    assert monitors.window is not None
    integral = integrate_power(series, *monitors.window, max_gap_ms=int(MAX_GAP_S * 1000))
    if integral.max_w is None:
        return None  # no reading in or around the window
    window_s = monitors.window_s or 0.0
    if integral.covered_s < window_s * 0.99:
        gaps = f", {integral.gaps} silence(s) over {MAX_GAP_S:.0f} s" if integral.gaps else ""
        notes.append(f"{host} {device}: samples span {integral.covered_s:.1f} s of the {window_s:.1f} s "
                     f"window{gaps}; the rest is not counted")
    # A lone sample spans no time: its reading is the average there is.
    average = integral.avg_w if integral.avg_w is not None else integral.max_w
    return DevicePower(host=host, device=device, samples=integral.samples, avg_w=average,
                       max_w=integral.max_w, energy_j=integral.energy_j, covered_s=integral.covered_s)


def _missing(vendor: VendorSpec) -> str:
    program = _program(vendor)
    devices = (f"no device monitor for vendor {vendor.name}" if program is None
               else f"{program} reported no power in the training window")
    return f"{devices} and no {HOST_POWER_TOOL} power on the hosts"


def run_energy(monitors: TrainingMonitors, vendor: VendorSpec, samples: int) -> Energy:
    """The run's Energy; ``samples`` are the globally trained samples (Metrics.samples)."""
    if monitors.window is None:
        return Energy(missing="no training window (train_start to train_stop) in the event logs")
    if not monitors.nodes:
        return Energy(window_s=monitors.window_s, missing="no monitor.csv came back from any node")
    notes = [f"{host}: no monitor.csv came back" for host in monitors.without_file]
    devices: list[DevicePower] = []
    hosts: list[DevicePower] = []
    for node in monitors.nodes:
        for index in node.device_indices():
            series = node.device_series(index, lambda sample: sample.power_w)
            if (entry := _device_power(monitors, node.host, str(index), series, notes)) is not None:
                devices.append(entry)
        if (entry := _device_power(monitors, node.host, HOST_DEVICE, node.host_power(), notes)) is not None:
            hosts.append(entry)
    program = _program(vendor)
    if devices:
        counted = devices
        source = f"{program}, per device"
        if hosts:
            source += f"; whole-host power ({HOST_POWER_TOOL}) listed apart, not in the total"
    elif hosts:
        counted = hosts
        source = f"{HOST_POWER_TOOL}, whole host (CPUs, memory, fans included): no device tool reports power"
    else:
        return Energy(window_s=monitors.window_s, missing=_missing(vendor), notes=notes)
    total = sum(entry.energy_j for entry in counted)
    return Energy(source=source, window_s=monitors.window_s, energy_j=total,
                  j_per_1k_samples=total / samples * 1000 if samples > 0 else None,
                  devices=devices + hosts, notes=notes)
