"""The campaign's backend: any backend, with what does not change from job to job
kept. Its connections stay open across jobs (one backend object serves the whole
campaign), each host's environment is captured once and each image made present
on a set of hosts once. After a failed attempt the campaign calls ``forget()``: a
host that failed may have changed (rebooted, new driver, images pruned), so the
next attempt captures and checks again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.backends.registry import make_backend
from harness.backends.transport import Transport
from harness.core.backend import ClusterBackend, Leftover, NodeWatch, PreflightReport
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import RunPlan
from harness.core.results import NodeOutcome
from harness.core.vendor import VendorSpec
from harness.hostinfo.model import EnvironmentInfo


class CachingBackend(ClusterBackend):
    """`inner` with environments and prepared images kept until forget()."""

    def __init__(self, inner: ClusterBackend) -> None:
        self.inner = inner
        self.uses_host_list = inner.uses_host_list
        self._environments: dict[tuple[str, str | None], EnvironmentInfo] = {}
        self._prepared: dict[tuple[str, tuple[str, ...]], str] = {}

    # -- what is kept -------------------------------------------------------------------
    def capture_hosts(self, hosts: list[Host], smi: str | None) -> dict[str, EnvironmentInfo]:
        missing = [host for host in hosts if (host.name, smi) not in self._environments]
        if missing:
            for name, info in self.inner.capture_hosts(missing, smi).items():
                self._environments[(name, smi)] = info
        # Copies: the runner completes each run's record with what its training processes reported.
        return {host.name: self._environments[(host.name, smi)].model_copy(deep=True) for host in hosts}

    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        if not self.inner.uses_host_list:  # a scheduler's nodes: captured inside the job's own allocation
            return self.inner.environment(plan)
        return self.capture_hosts([node.host for node in plan.nodes], plan.vendor.smi)

    def prepare_image(self, plan: RunPlan) -> str:
        what = plan.image.tag if plan.image is not None else f"{plan.job.run_id}:code"  # bare: its code is per run
        key = (what, tuple(node.host.name for node in plan.nodes))
        if key not in self._prepared:
            self._prepared[key] = self.inner.prepare_image(plan)
        return self._prepared[key]

    def forget(self) -> None:
        """Capture environments and check images again from the next run on."""
        self._environments.clear()
        self._prepared.clear()
        self.inner.forget()

    # -- the rest, as the inner backend does it -------------------------------------------
    def transport(self, host: Host) -> Transport:
        return self.inner.transport(host)

    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        return self.inner.plan(job, inventory, vendor)

    def preflight(self, plan: RunPlan, clean_orphans: bool = False) -> PreflightReport:
        return self.inner.preflight(plan, clean_orphans)

    def allocate(self, plan: RunPlan) -> RunPlan:
        return self.inner.allocate(plan)

    def release(self, plan: RunPlan) -> None:
        self.inner.release(plan)

    def refuse_if_held(self, job: Job, warn: Callable[[str], None]) -> None:
        self.inner.refuse_if_held(job, warn)

    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        self.inner.start_monitors(plan, dest)

    def stop_monitors(self) -> None:
        self.inner.stop_monitors()

    def launch(self, plan: RunPlan) -> None:
        self.inner.launch(plan)

    def watch(self, plan: RunPlan, node_ranks: list[int]) -> NodeWatch:
        return self.inner.watch(plan, node_ranks)

    def dump_stacks(self, plan: RunPlan, node_ranks: list[int]) -> list[int]:
        return self.inner.dump_stacks(plan, node_ranks)

    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        self.inner.stop(plan, node_ranks)

    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        return self.inner.tail(plan, node_rank, lines)

    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        return self.inner.collect(plan, dest, node_ranks)

    def cleanup(self, plan: RunPlan, node_ranks: list[int], collected: set[int]) -> list[str]:
        return self.inner.cleanup(plan, node_ranks, collected)

    def collect_again(self, run_id: str, hosts: list[Host], dest: Path) -> list[NodeOutcome]:
        return self.inner.collect_again(run_id, hosts, dest)

    def leftovers(self, hosts: list[Host], run_id: str | None = None) -> list[Leftover]:
        return self.inner.leftovers(hosts, run_id)

    def remove(self, leftovers: list[Leftover]) -> list[str]:
        return self.inner.remove(leftovers)

    def close(self) -> None:
        self.inner.close()


def campaign_backend(inventory: Inventory) -> CachingBackend:
    """The backend a campaign runs its jobs through: the registry's, with what stays
    the same kept (a scheduler's backend captures its fresh nodes per job)."""
    return CachingBackend(make_backend(inventory))
