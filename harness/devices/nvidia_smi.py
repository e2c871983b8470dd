"""nvidia-smi's ``--query-gpu=... --format=csv`` output: monitor samples (with
the SM clock and the throttle reasons bitmask, decoded by throttle_reasons) and
the device inventory; and what the campaign's health gates ask: the compute
processes on the devices (``--query-compute-apps``), the ECC counters, and the
driver's XID lines in the kernel log.

The one CSV reader here serves both (and ixsmi, which mimics this mode): with a
header the columns are read from it (any order, units in brackets ignored);
without one they are the queried fields. Recorded outputs:
tests/fixtures/smi/nvidia-smi_*.txt.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

from harness.devices.readings import (
    CORRECTED_AGGREGATE,
    CORRECTED_VOLATILE,
    UNCORRECTED_AGGREGATE,
    UNCORRECTED_VOLATILE,
    DeviceInventory,
    DeviceProcess,
    DeviceSample,
    ErrorCounters,
    reading,
)

# What the monitor asks for. The throttle field: older drivers know only
# clocks_throttle_reasons.* (465.27's --help-query-gpu); from R535 (535.113.01
# seen, github.com/utkuozdemir/nvidia_gpu_exporter/issues/123) the CSV header
# calls it clocks_event_reasons.*, and the old name is still accepted (590.48.01's
# --help-query-gpu: '"clocks_event_reasons.active" or "clocks_throttle_reasons.active"').
# So the old name is asked, and the header is read under either (recorded
# outputs of both: tests/fixtures/smi/nvidia-smi_query_gpu_*.txt).
NVIDIA_QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "power.draw",
    "temperature.gpu",
    "clocks.sm",
    "clocks_throttle_reasons.active",
)
# What the environment capture asks for.
INVENTORY_FIELDS: tuple[str, ...] = ("name", "memory.total", "driver_version")

# --query-gpu field name -> DeviceSample attribute (a number). Iluvatar's corex
# 4.x names the power field gpu.power.draw; the header spells clocks.sm as
# clocks.current.sm. Where two columns give one attribute, the first listed here
# that has a reading wins (power.draw over power.draw.instant).
QUERY_FIELD_ATTRIBUTES: dict[str, str] = {
    "index": "index",
    "memory.used": "mem_used_mib",
    "memory.total": "mem_total_mib",
    "utilization.gpu": "util_pct",
    "power.draw": "power_w",
    "gpu.power.draw": "power_w",
    "power.draw.instant": "power_w",
    "temperature.gpu": "temp_c",
    "clocks.sm": "clock_mhz",
    "clocks.current.sm": "clock_mhz",
}
# The active throttle reasons bitmask, under its old and its R535+ name.
THROTTLE_MASK_FIELDS: tuple[str, ...] = ("clocks_throttle_reasons.active", "clocks_event_reasons.active")

# The bits of that mask, from NVML's nvmlClocksThrottleReasons (renamed
# nvmlClocksEventReasons in R535, same values):
# https://docs.nvidia.com/deploy/nvml-api/group__nvmlClocksThrottleReasons.html
# and nvidia-smi --help-query-gpu ("clocks_throttle_reasons.*"). gpu_idle (nothing
# to run) and applications_clocks (clocks the operator set) are states, not throttles.
THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks"),
    (0x4, "sw_power_cap"),  # the power limit holds the clocks down
    (0x8, "hw_slowdown"),  # clocks halved or worse: too hot, power brake, or fast power trigger
    (0x10, "sync_boost"),  # held to the slowest GPU of its sync boost group
    (0x20, "sw_thermal"),  # above the max operating temperature
    (0x40, "hw_thermal"),
    (0x80, "power_brake"),  # the system power supply asserted the external power brake
    (0x100, "display_clocks"),
)
NOT_A_THROTTLE: frozenset[str] = frozenset({"gpu_idle", "applications_clocks"})
_MASK = re.compile(r"^0[xX][0-9a-fA-F]+$")
_HEADER_FIELD = re.compile(r"^[a-z_][A-Za-z0-9_.]*$")  # encoder.stats.sessionCount, pci.baseClass
_UNIT_IN_HEADER = re.compile(r"\s*\[[^\]]*\]$")
_MIB = re.compile(r"^(\d+(?:\.\d+)?)\s*(MiB)?$")
_NAME_COLUMNS = ("name", "process_name")  # a comma inside one of these splits a CSV line


def query_argv(tool: str, fields: Sequence[str], csv_format: str = "csv,noheader,nounits") -> tuple[str, ...]:
    """``<tool> --query-gpu=<fields> --format=<csv_format>``."""
    return (tool, f"--query-gpu={','.join(fields)}", f"--format={csv_format}")


def _header_fields(cells: list[str]) -> list[str] | None:
    names = [_UNIT_IN_HEADER.sub("", cell.strip()) for cell in cells]
    if names and all(_HEADER_FIELD.match(name) for name in names):
        return names
    return None


def _query_rows(text: str, fields: Sequence[str]) -> list[dict[str, str] | None]:
    """Every non-blank data line of a ``--query-gpu`` CSV as {column: cell}
    (cells stripped), None for a line of the wrong width.

    Columns come from the header when there is one, else from ``fields``. A line
    with more cells than columns is a device or process name with a comma in it
    when there is a name column: the cells are joined back."""
    lines = [
        [cell.strip() for cell in cells]
        for cells in csv.reader(io.StringIO(text), skipinitialspace=True)
        if any(cell.strip() for cell in cells)
    ]
    if not lines:
        return []
    columns = _header_fields(lines[0])
    if columns is None:
        columns = list(fields)
    else:
        lines = lines[1:]
    rows: list[dict[str, str] | None] = []
    name_column = next((name for name in _NAME_COLUMNS if name in columns), None)
    for cells in lines:
        if len(cells) > len(columns) and name_column is not None:
            extra = len(cells) - len(columns)
            name_at = columns.index(name_column)
            cells[name_at : name_at + extra + 1] = [", ".join(cells[name_at : name_at + extra + 1])]
        rows.append(dict(zip(columns, cells)) if len(cells) == len(columns) else None)
    return rows


def parse_query_csv(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """The rows of ``nvidia-smi``/``ixsmi --query-gpu=... --format=csv`` as
    {field: cell}; lines of the wrong width are skipped."""
    return [row for row in _query_rows(text, fields) if row is not None]


def parse_nvidia_smi_csv(text: str, fields: Iterable[str] = NVIDIA_QUERY_FIELDS) -> list[DeviceSample]:
    """``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` as
    samples, with the SM clock and the active throttle reasons mask where they
    were asked. Devices without an ``index`` column are numbered in output order."""
    samples: list[DeviceSample] = []
    for position, row in enumerate(_query_rows(text, tuple(fields))):
        if row is None:
            continue
        values: dict[str, float | None] = {}
        for name, attribute in QUERY_FIELD_ATTRIBUTES.items():
            if name in row and values.get(attribute) is None:
                values[attribute] = reading(row[name])
        mask = next((parse_throttle_mask(row[name]) for name in THROTTLE_MASK_FIELDS if name in row), None)
        index = values.get("index")
        samples.append(
            DeviceSample(
                index=int(index) if index is not None else position,
                mem_used_mib=values.get("mem_used_mib"),
                mem_total_mib=values.get("mem_total_mib"),
                util_pct=values.get("util_pct"),
                power_w=values.get("power_w"),
                temp_c=values.get("temp_c"),
                clock_mhz=values.get("clock_mhz"),
                throttle_mask=mask,
            )
        )
    return samples


def parse_throttle_mask(cell: str) -> int | None:
    """``0x0000000000000004`` as 4; None for [N/A], [Not Supported] or anything
    that is not a hex number."""
    text = cell.strip()
    return int(text, 16) if _MASK.match(text) else None


def throttle_reasons(mask: int) -> list[str]:
    """The names of the throttles active in ``mask`` (THROTTLE_REASONS, less the
    states that are not throttles); a bit NVML did not define when this was
    written is named by its value (``reason_0x200``)."""
    names = [name for bit, name in THROTTLE_REASONS if mask & bit and name not in NOT_A_THROTTLE]
    known = 0
    for bit, _ in THROTTLE_REASONS:
        known |= bit
    unknown = mask & ~known
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            names.append(f"reason_{bit:#x}")
        bit <<= 1
    return names


def parse_query_inventory(text: str) -> DeviceInventory:
    """The INVENTORY_FIELDS query (``--format=csv,noheader,nounits``): model and
    memory per device, the first device's driver version."""
    rows = parse_query_csv(text, INVENTORY_FIELDS)
    totals = [float(match.group(1)) for row in rows if (match := _MIB.match(row["memory.total"]))]
    return DeviceInventory(
        models=[row["name"] for row in rows],
        memory_mib=totals,
        driver=rows[0]["driver_version"] if rows else None,
    )


NVIDIA_SMI_ARGV = query_argv("nvidia-smi", NVIDIA_QUERY_FIELDS)
NVIDIA_SMI_INVENTORY_ARGV = query_argv("nvidia-smi", INVENTORY_FIELDS)


# --- health gates -----------------------------------------------------------------

# What --query-compute-apps lists (every compute context on every device). The
# CSV header calls the memory column used_gpu_memory.
COMPUTE_APPS_FIELDS: tuple[str, ...] = ("pid", "process_name", "used_memory")
_PROCESS_DEVICE_COLUMNS = ("gpu_bus_id", "gpu_uuid", "gpu_name")
# --query-gpu ECC fields -> ErrorCounters names. Volatile counters count since the
# driver was loaded, aggregate ones over the device's life (nvidia-smi --help-query-gpu).
ECC_FIELD_COUNTERS: dict[str, str] = {
    "ecc.errors.uncorrected.volatile.total": UNCORRECTED_VOLATILE,
    "ecc.errors.uncorrected.aggregate.total": UNCORRECTED_AGGREGATE,
    "ecc.errors.corrected.volatile.total": CORRECTED_VOLATILE,
    "ecc.errors.corrected.aggregate.total": CORRECTED_AGGREGATE,
}
ECC_FIELDS: tuple[str, ...] = ("index", *ECC_FIELD_COUNTERS)
# The driver's line in the kernel log for an XID event ("NVRM: Xid (PCI:0000:01:00): 31, ...").
XID_MARKER = re.compile(r"NVRM: Xid \(")


def parse_compute_apps(text: str, fields: Sequence[str] = COMPUTE_APPS_FIELDS) -> list[DeviceProcess]:
    """``nvidia-smi --query-compute-apps=<fields> --format=csv[,noheader][,nounits]``
    as processes; nothing at all (or the header alone) when no process runs."""
    processes: list[DeviceProcess] = []
    for row in parse_query_csv(text, fields):
        pid = row.get("pid", "")
        if not pid.isdigit():
            continue
        memory = row.get("used_memory", row.get("used_gpu_memory", ""))
        device = next((row[column] for column in _PROCESS_DEVICE_COLUMNS if row.get(column)), None)
        processes.append(DeviceProcess(pid=int(pid), name=row.get("process_name", "?"), used_mib=reading(memory),
                                       device=device))
    return processes


def parse_ecc_counters(text: str, fields: Sequence[str] = ECC_FIELDS) -> list[ErrorCounters]:
    """The ECC totals of ``--query-gpu=index,ecc.errors...`` per device (columns
    by header when there is one); [N/A] (no ECC on the device) leaves a counter out."""
    devices: list[ErrorCounters] = []
    for position, row in enumerate(parse_query_csv(text, fields)):
        index = reading(row.get("index", ""))
        counts: dict[str, int] = {}
        for field, counter in ECC_FIELD_COUNTERS.items():
            value = reading(row.get(field, ""))
            if value is not None:
                counts[counter] = int(value)
        devices.append(ErrorCounters(index=int(index) if index is not None else position, counts=counts))
    return devices


NVIDIA_SMI_PROCESSES_ARGV = ("nvidia-smi", f"--query-compute-apps={','.join(COMPUTE_APPS_FIELDS)}",
                             "--format=csv,noheader,nounits")
NVIDIA_SMI_ECC_ARGV = query_argv("nvidia-smi", ECC_FIELDS)
