"""Kunlunxin's ``xpu_smi``: the default table (samples, inventory, and for the
health gates its PROCESSES section) and the ``xpu_smi -m`` machine lines (samples).

Recorded outputs: tests/fixtures/smi/xpu_smi_table_*.txt and xpu_smi_m_p800.txt.
"""

from __future__ import annotations

import re
import shlex

from harness.devices.readings import BUS_ID, DeviceInventory, DeviceProcess, DeviceSample, reading, table_cells

XPU_SMI_ARGV = ("xpu_smi",)
XPU_SMI_MACHINE_ARGV = ("xpu_smi", "-m")

_XPU_MEMORY = re.compile(r"(?P<used>\d+(?:\.\d+)?)\s*/\s*(?P<total>\d+(?:\.\d+)?)\s*MB")
_DRIVER = re.compile(r"^Driver Version:\s*(\S+)", re.MULTILINE)

# Positions in one ``xpu_smi -m`` line (whitespace-separated, the model name quoted).
XPU_MACHINE_FIELDS = {"bus_id": 0, "index": 1, "temp_c": 4, "power_w": 8, "mem_used_mib": 17, "mem_total_mib": 18, "util_pct": 19}


def xpu_smi_rows(text: str, section: tuple[str, ...] = ("PCI Addr", "UseRate")) -> list[dict[str, str]]:
    """The rows of one table of ``xpu_smi``'s default output, each as {column
    header: cell}: the DEVICES table, or the first table whose header has DevID
    and one of the ``section`` columns. Columns are found by their header, since
    driver versions print different sets."""
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        cells = table_cells(line)
        if header is None:
            if "DevID" in cells and any(column in cells for column in section):
                header = cells
            continue
        if not cells:
            if rows:
                break
            continue
        if len(cells) != len(header) or not cells[0].isdigit():
            continue
        rows.append(dict(zip(header, cells)))
    return rows


def parse_xpu_smi_table(text: str) -> list[DeviceSample]:
    """The DEVICES table of Kunlunxin's ``xpu_smi`` (``DevID``, ``UseRate``,
    ``Memory``, ``Power(W)``, ``Temp``, ``Freq(MHz)``, whichever the driver
    prints); memory is ``used / total MB`` (MiB). No throttle reasons."""
    samples: list[DeviceSample] = []
    for row in xpu_smi_rows(text):
        memory = _XPU_MEMORY.search(row.get("Memory", ""))
        samples.append(
            DeviceSample(
                index=int(row["DevID"]),
                mem_used_mib=float(memory.group("used")) if memory else None,
                mem_total_mib=float(memory.group("total")) if memory else None,
                util_pct=reading(row["UseRate"].replace(" ", "")) if "UseRate" in row else None,
                power_w=reading(row["Power(W)"]) if "Power(W)" in row else None,
                temp_c=reading(row["Temp"]) if "Temp" in row else None,
                clock_mhz=reading(row["Freq(MHz)"]) if "Freq(MHz)" in row else None,
            )
        )
    return samples


def parse_xpu_smi_inventory(text: str) -> DeviceInventory:
    """Model and memory total (MiB) per device, and the driver version, from
    the default ``xpu_smi`` table."""
    driver = _DRIVER.search(text)
    models: list[str] = []
    totals: list[float] = []
    for row in xpu_smi_rows(text):
        if "Model" not in row:
            continue
        models.append(row["Model"])
        memory = re.search(r"/\s*(\d+(?:\.\d+)?)\s*MB", row.get("Memory", ""))
        if memory:
            totals.append(float(memory.group(1)))
    return DeviceInventory(models=models, memory_mib=totals, driver=driver.group(1) if driver else None)


def parse_xpu_smi_machine(text: str) -> list[DeviceSample]:
    """``xpu_smi -m``: one line per device, fields by position (bus id, device
    id, ..., temperature C at 4, power W at 8, memory used/total MiB at 17/18,
    utilisation % at 19). Positions 9 to 14 look like six clocks (1450 each in the
    recorded P800 output) but no source says which one is the core's: no clock
    is read from this mode, and it prints no throttle reasons."""
    samples: list[DeviceSample] = []
    for line in text.splitlines():
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        if len(tokens) <= XPU_MACHINE_FIELDS["util_pct"] or not BUS_ID.fullmatch(tokens[0]):
            continue
        if not tokens[XPU_MACHINE_FIELDS["index"]].isdigit():
            continue
        samples.append(
            DeviceSample(
                index=int(tokens[XPU_MACHINE_FIELDS["index"]]),
                mem_used_mib=reading(tokens[XPU_MACHINE_FIELDS["mem_used_mib"]]),
                mem_total_mib=reading(tokens[XPU_MACHINE_FIELDS["mem_total_mib"]]),
                util_pct=reading(tokens[XPU_MACHINE_FIELDS["util_pct"]]),
                power_w=reading(tokens[XPU_MACHINE_FIELDS["power_w"]]),
                temp_c=reading(tokens[XPU_MACHINE_FIELDS["temp_c"]]),
            )
        )
    return samples


def parse_xpu_smi_processes(text: str) -> list[DeviceProcess]:
    """The PROCESSES table of the default ``xpu_smi`` output (``DevID | PID |
    Streams | L3 | Memory | Command``); empty when no process holds a device."""
    processes: list[DeviceProcess] = []
    for row in xpu_smi_rows(text, section=("PID",)):
        if not row.get("PID", "").isdigit():
            continue
        memory = re.match(r"\s*(\d+(?:\.\d+)?)", row.get("Memory", ""))
        processes.append(DeviceProcess(pid=int(row["PID"]), name=row.get("Command") or "?", device=row["DevID"],
                                       used_mib=float(memory.group(1)) if memory else None))
    return processes
