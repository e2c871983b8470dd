"""Iluvatar's ``ixsmi``: its default table (the nvidia-smi style table) and its
nvidia-smi compatible ``--query-gpu`` CSV mode; for the health gates, the
"Processes:" section of the default table.

Recorded tables: tests/fixtures/smi/ixsmi_table_*.txt. The inventory is read
through the CSV mode with nvidia_smi.parse_query_inventory.
"""

from __future__ import annotations

import re

from harness.devices.nvidia_smi import INVENTORY_FIELDS, parse_nvidia_smi_csv, query_argv
from harness.devices.readings import BUS_ID, INVALID_READING, DeviceProcess, DeviceSample, table_cells

_TABLE_INDEX_AND_NAME = re.compile(r"^\s*(?P<index>\d+)\s+\S")
_TABLE_TEMP = re.compile(r"(?P<value>\d+(?:\.\d+)?)C\b")
_TABLE_POWER = re.compile(r"(?P<value>\d+(?:\.\d+)?)W\s*/")
_TABLE_MEMORY = re.compile(r"(?P<used>\d+(?:\.\d+)?)MiB\s*/\s*(?P<total>\d+(?:\.\d+)?)MiB")
_TABLE_UTIL = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*%")
# ixsmi's first device line ends in "Clock-SM  Clock-Mem": | 1500MHz   1200MHz |
_TABLE_CLOCK = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*MHz")
_PROCESS_MEMORY = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(MiB)?$")
# nvidia-smi's Type column (compute, graphics, both, MPS); ixsmi prints no Type.
_PROCESS_TYPES = {"C", "G", "C+G", "M", "M+C", "M+G", "M+C+G"}

# ixsmi's CSV mode leaves power out: the field is power.draw in corex 3.x and
# gpu.power.draw in 4.x, and a wrong name fails the whole query.
IXSMI_QUERY_FIELDS: tuple[str, ...] = ("index", "memory.used", "memory.total", "utilization.gpu", "temperature.gpu")

IXSMI_ARGV = ("ixsmi",)
IXSMI_CSV_ARGV = query_argv("ixsmi", IXSMI_QUERY_FIELDS, "csv,nounits")
IXSMI_INVENTORY_ARGV = query_argv("ixsmi", INVENTORY_FIELDS)


def _match_number(pattern: re.Pattern[str], text: str) -> float | None:
    match = pattern.search(text)
    if match is None:
        return None
    number = float(match.group("value"))
    return None if number == INVALID_READING else number


def parse_smi_table(text: str) -> list[DeviceSample]:
    """The default table of ``ixsmi`` (and of ``nvidia-smi``, which it mimics):
    a line ``| 0  Iluvatar BI-V100 | 00000000:14:00.0 | 1500MHz  1200MHz |`` (SM and
    memory clock; nvidia-smi prints the ECC count there) followed by
    ``| 0%  31C  P0  54W / 250W | 513MiB / 32768MiB | 0%  Default |``. Neither
    prints throttle reasons."""
    lines = text.splitlines()
    samples: list[DeviceSample] = []
    for position, line in enumerate(lines[:-1]):
        cells = table_cells(line)
        if len(cells) < 3:
            continue
        head = _TABLE_INDEX_AND_NAME.match(cells[0])
        if head is None or not BUS_ID.search(cells[1]):
            continue
        stats = table_cells(lines[position + 1])
        if len(stats) < 3:
            continue
        memory = _TABLE_MEMORY.search(stats[1])
        samples.append(
            DeviceSample(
                index=int(head.group("index")),
                mem_used_mib=float(memory.group("used")) if memory else None,
                mem_total_mib=float(memory.group("total")) if memory else None,
                util_pct=_match_number(_TABLE_UTIL, stats[2]),
                power_w=_match_number(_TABLE_POWER, stats[0]),
                temp_c=_match_number(_TABLE_TEMP, stats[0]),
                clock_mhz=_match_number(_TABLE_CLOCK, cells[2]),
            )
        )
    return samples


def parse_ixsmi_csv(text: str) -> list[DeviceSample]:
    """``ixsmi --query-gpu=<IXSMI_QUERY_FIELDS> --format=csv,nounits``."""
    return parse_nvidia_smi_csv(text, IXSMI_QUERY_FIELDS)


def _process_row(cell: str) -> DeviceProcess | None:
    """``0   N/A  N/A     10734      C   foo_bar    160MiB`` (nvidia-smi) or
    ``0   10734   foo_bar   160`` (ixsmi's columns GPU, PID, Process name, Usage(MiB))."""
    tokens = cell.split()
    if len(tokens) < 3 or not tokens[0].isdigit():
        return None
    rest = tokens[1:]
    while rest and rest[0] == "N/A":  # the GI and CI columns of a GPU without MIG
        rest = rest[1:]
    if len(rest) < 2 or not rest[0].isdigit():
        return None
    pid, rest = int(rest[0]), rest[1:]
    memory = _PROCESS_MEMORY.match(rest[-1])
    if memory is not None or rest[-1] == "N/A":
        rest = rest[:-1]
    if rest and rest[0] in _PROCESS_TYPES:
        rest = rest[1:]
    return DeviceProcess(pid=pid, name=" ".join(rest) or "?", device=tokens[0],
                         used_mib=float(memory.group("value")) if memory else None)


def parse_process_table(text: str) -> list[DeviceProcess]:
    """The rows of the "Processes:" section of the default table (``ixsmi``, and
    ``nvidia-smi``, whose layout it follows); none for "No running processes found"."""
    processes: list[DeviceProcess] = []
    inside = False
    for line in text.splitlines():
        cells = table_cells(line)
        if not inside:
            inside = bool(cells) and cells[0].startswith("Processes:")
            continue
        if len(cells) == 1 and (process := _process_row(cells[0])) is not None:
            processes.append(process)
    return processes
