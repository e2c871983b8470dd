"""Why a rank is slow, from its node's monitor samples over the training window:
the device's median clock, power and temperature and the throttle reasons its
tool reported (harness/devices/conditions.py)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.attribution import WhyLookup
from harness.core.plan import RunPlan
from harness.core.results import RankTiming
from harness.devices.conditions import device_conditions

_DEVICE_INDEX = re.compile(r"^[a-z]+:(\d+)")


def device_index(device: str) -> int | None:
    """"cuda:3 (NVIDIA H100)" -> 3; None for a device without an index (cpu)."""
    match = _DEVICE_INDEX.match(device)
    return int(match.group(1)) if match else None


def monitor_why(out_dir: Path, plan: RunPlan) -> WhyLookup:
    nodes = {node.node_rank: node for node in plan.nodes}

    def why(timing: RankTiming, window: tuple[int, int] | None) -> str:
        node = nodes.get(timing.node_rank) if timing.node_rank is not None else None
        if node is None:
            return "its node is unknown"
        if window is None:
            return "no training window in its events"
        index = device_index(timing.device)
        if index is None and plan.vendor.smi is not None:
            return f"device {timing.device or '?'} has no index to look up in the node's monitor"
        csv_path = out_dir / node.dir_name / "monitor.csv"
        # The tool's index is taken to be torch's: every device of the node is visible to its ranks.
        return device_conditions(csv_path, index or 0, window[0], window[1], tool=plan.vendor.smi).describe()

    return why
