"""nvidia-smi's ``--query-gpu=... --format=csv`` output: monitor samples and
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

# What the monitor asks for.
NVIDIA_QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "power.draw",
    "temperature.gpu",
)
# What the environment capture asks for.
INVENTORY_FIELDS: tuple[str, ...] = ("name", "memory.total", "driver_version")

# --query-gpu field name -> DeviceSample attribute. Iluvatar's corex 4.x names
# the power field gpu.power.draw.
QUERY_FIELD_ATTRIBUTES: dict[str, str] = {
    "index": "index",
    "memory.used": "mem_used_mib",
    "memory.total": "mem_total_mib",
    "utilization.gpu": "util_pct",
    "power.draw": "power_w",
    "gpu.power.draw": "power_w",
    "power.draw.instant": "power_w",
    "temperature.gpu": "temp_c",
}
_HEADER_FIELD = re.compile(r"^[a-z_][a-z0-9_.]*$")
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
    samples. Devices without an ``index`` column are numbered in output order."""
    samples: list[DeviceSample] = []
    for position, row in enumerate(_query_rows(text, tuple(fields))):
        if row is None:
            continue
        values: dict[str, float | None] = {}
        for name, cell in row.items():
            attribute = QUERY_FIELD_ATTRIBUTES.get(name)
            if attribute is not None:
                values[attribute] = reading(cell)
        index = values.pop("index", None)
        samples.append(DeviceSample(index=int(index) if index is not None else position, **values))
    return samples


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
