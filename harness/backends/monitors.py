"""The device and host monitors of a run's nodes: one MonitorSampler per node, each
on a connection of its own so that a slow smi call never holds up the flow's
commands or the watch's streams. Shared by every backend (composed, not inherited)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.backends.transport import Transport
from harness.core.inventory import Host
from harness.core.plan import RunPlan
from harness.devices.sampler import MonitorSampler
from harness.parallel import run_all

# Power is integrated over the training window (harness/core/energy.py): at
# least one sample a second. Whole-host power is asked of the BMC (ipmitool, the
# slowest probe) every SYSTEM_POWER_EVERY-th round only, so that a round stays
# within the second.
MONITOR_INTERVAL_S = 1.0
SYSTEM_POWER_EVERY = 5


class Monitors:
    def __init__(self) -> None:
        self._samplers: list[MonitorSampler] = []

    def start(self, plan: RunPlan, dest: Path, connect: Callable[[Host], Transport]) -> None:
        """Sample every node into dest/<host>_noderank<k>/monitor.csv; `connect` opens a new connection."""
        for node in plan.nodes:
            sampler = MonitorSampler(connect(node.host), plan.vendor.smi, dest / node.dir_name / "monitor.csv",
                                     interval_s=MONITOR_INTERVAL_S, system_power=True,
                                     system_power_every=SYSTEM_POWER_EVERY)
            sampler.start()
            self._samplers.append(sampler)

    def stop(self) -> None:
        def stop(sampler: MonitorSampler) -> None:
            try:
                sampler.stop()
            except OSError:  # its file could not be flushed (a full disk): the samples are lost, nothing else
                pass
            finally:
                sampler.transport.close()

        run_all(stop, self._samplers)
        self._samplers.clear()
