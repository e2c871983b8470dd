"""nvidia-smi's ``--query-gpu=... --format=csv`` output: monitor samples and
the device inventory.

The one CSV reader here serves both (and ixsmi, which mimics this mode): with a
header the columns are read from it (any order, units in brackets ignored);
without one they are the queried fields. Recorded outputs:
tests/fixtures/smi/nvidia-smi_csv_*.txt.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

from harness.devices.readings import DeviceInventory, DeviceSample, reading

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
    with more cells than columns is a device name with a comma in it when there
    is a ``name`` column: the cells are joined back."""
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
    for cells in lines:
        if len(cells) > len(columns) and "name" in columns:
            extra = len(cells) - len(columns)
            name_at = columns.index("name")
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
