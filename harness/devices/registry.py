"""The device tools a vendor spec can name (``smi: ixsmi``): for each, the
command the monitor runs and its sample parser, the command the environment
capture runs and its inventory parser, what the campaign's health gates can
ask it (processes on the devices, ECC counters, the driver's error line in the
kernel log), None where the tool cannot tell; and whether its samples say why the
clocks are held down (throttle reasons: nvidia-smi only)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from harness.devices import ixsmi, nvidia_smi, xpu_smi
from harness.devices.readings import DeviceInventory, DeviceProcess, DeviceSample, ErrorCounters
from harness.errors import UserError

ProcessQuery = tuple[tuple[str, ...], Callable[[str], list[DeviceProcess]]]
ErrorQuery = tuple[tuple[str, ...], Callable[[str], list[ErrorCounters]]]


@dataclass(frozen=True)
class HealthQueries:
    """What the health gates ask a tool: (argv, parser) per question, None where
    the tool cannot answer it (the gate says so once and is skipped)."""

    processes: ProcessQuery | None = None
    errors: ErrorQuery | None = None  # ECC counters per device
    kernel_marker: re.Pattern[str] | None = None  # the driver's error line in dmesg (XID)


NVIDIA_HEALTH = HealthQueries(
    processes=(nvidia_smi.NVIDIA_SMI_PROCESSES_ARGV, nvidia_smi.parse_compute_apps),
    errors=(nvidia_smi.NVIDIA_SMI_ECC_ARGV, nvidia_smi.parse_ecc_counters),
    kernel_marker=nvidia_smi.XID_MARKER,
)
# ixsmi lists processes only in its default table; no recorded output shows its
# ECC counters or a kernel log line of its driver, so neither is asked.
IXSMI_HEALTH = HealthQueries(processes=(ixsmi.IXSMI_ARGV, ixsmi.parse_process_table))
XPU_SMI_HEALTH = HealthQueries(processes=(xpu_smi.XPU_SMI_ARGV, xpu_smi.parse_xpu_smi_processes))


@dataclass(frozen=True)
class SmiTool:
    key: str
    argv: tuple[str, ...]  # the monitor's command
    parse: Callable[[str], list[DeviceSample]]
    inventory_argv: tuple[str, ...]  # the environment capture's command
    parse_inventory: Callable[[str], DeviceInventory]
    health: HealthQueries = HealthQueries()
    reports_throttle: bool = False  # its samples carry DeviceSample.throttle_mask

    @property
    def program(self) -> str:
        """The tool's own name, as a user knows it (ixsmi for ixsmi-csv)."""
        return self.argv[0]


SMI_TOOLS: dict[str, SmiTool] = {
    tool.key: tool
    for tool in (
        SmiTool("nvidia-smi", nvidia_smi.NVIDIA_SMI_ARGV, nvidia_smi.parse_nvidia_smi_csv,
                nvidia_smi.NVIDIA_SMI_INVENTORY_ARGV, nvidia_smi.parse_query_inventory, NVIDIA_HEALTH,
                reports_throttle=True),
        SmiTool("ixsmi", ixsmi.IXSMI_ARGV, ixsmi.parse_smi_table,
                ixsmi.IXSMI_INVENTORY_ARGV, nvidia_smi.parse_query_inventory, IXSMI_HEALTH),
        SmiTool("ixsmi-csv", ixsmi.IXSMI_CSV_ARGV, ixsmi.parse_ixsmi_csv,
                ixsmi.IXSMI_INVENTORY_ARGV, nvidia_smi.parse_query_inventory, IXSMI_HEALTH),
        SmiTool("xpu_smi", xpu_smi.XPU_SMI_ARGV, xpu_smi.parse_xpu_smi_table,
                xpu_smi.XPU_SMI_ARGV, xpu_smi.parse_xpu_smi_inventory, XPU_SMI_HEALTH),
        SmiTool("xpu_smi-m", xpu_smi.XPU_SMI_MACHINE_ARGV, xpu_smi.parse_xpu_smi_machine,
                xpu_smi.XPU_SMI_ARGV, xpu_smi.parse_xpu_smi_inventory, XPU_SMI_HEALTH),
    )
}

InventoryCommand = tuple[tuple[str, ...], Callable[[str], DeviceInventory]]


def smi_tool(key: str) -> SmiTool:
    tool = SMI_TOOLS.get(key)
    if tool is None:
        raise UserError(f"unknown device monitor {key!r}; expected one of: {', '.join(sorted(SMI_TOOLS))}", field="smi")
    return tool


def inventory_commands(key: str | None) -> list[InventoryCommand]:
    """What the environment capture tries, in turn: the named tool's inventory
    command, or with no name every distinct one in registry order (nvidia-smi,
    ixsmi, xpu_smi). A name the registry does not know is asked the nvidia-smi
    way, as ixsmi is."""
    if not key:
        commands: dict[tuple[str, ...], InventoryCommand] = {}
        for known in SMI_TOOLS.values():
            commands.setdefault(known.inventory_argv, (known.inventory_argv, known.parse_inventory))
        return list(commands.values())
    tool = SMI_TOOLS.get(key)
    if tool is None:
        return [(nvidia_smi.query_argv(key, nvidia_smi.INVENTORY_FIELDS), nvidia_smi.parse_query_inventory)]
    return [(tool.inventory_argv, tool.parse_inventory)]


def health_queries(key: str) -> HealthQueries:
    """What the health gates can ask the named tool; nothing for a name the
    registry does not know."""
    tool = SMI_TOOLS.get(key)
    return tool.health if tool is not None else HealthQueries()
