"""Iluvatar's ``ixsmi``: its default table (the nvidia-smi style table) and its
nvidia-smi compatible ``--query-gpu`` CSV mode.

Recorded tables: tests/fixtures/smi/ixsmi_table_*.txt. The inventory is read
through the CSV mode with nvidia_smi.parse_query_inventory.
"""

from __future__ import annotations

import re

from harness.devices.nvidia_smi import INVENTORY_FIELDS, parse_nvidia_smi_csv, query_argv
from harness.devices.readings import BUS_ID, INVALID_READING, DeviceSample, table_cells

_TABLE_INDEX_AND_NAME = re.compile(r"^\s*(?P<index>\d+)\s+\S")
_TABLE_TEMP = re.compile(r"(?P<value>\d+(?:\.\d+)?)C\b")
_TABLE_POWER = re.compile(r"(?P<value>\d+(?:\.\d+)?)W\s*/")
_TABLE_MEMORY = re.compile(r"(?P<used>\d+(?:\.\d+)?)MiB\s*/\s*(?P<total>\d+(?:\.\d+)?)MiB")
_TABLE_UTIL = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*%")

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
    a line ``| 0  Iluvatar BI-V100 | 00000000:14:00.0 | ...`` followed by
    ``| 0%  31C  P0  54W / 250W | 513MiB / 32768MiB | 0%  Default |``."""
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
            )
        )
    return samples


def parse_ixsmi_csv(text: str) -> list[DeviceSample]:
    """``ixsmi --query-gpu=<IXSMI_QUERY_FIELDS> --format=csv,nounits``."""
    return parse_nvidia_smi_csv(text, IXSMI_QUERY_FIELDS)
