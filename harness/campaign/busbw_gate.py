"""The bandwidth gate: before a job, the all-reduce case (cases/allreduce) runs
on the job's own nodes and shape, through the same backend and runner; when its
peak bus bandwidth is below the suite's `gates.min_busbw_gbps` (or it fails),
the job is not run and its attempt is `infra` (a degraded link, a fabric that
fell back to sockets, a bad HCA). The gate's run is recorded like any run, under
its own run id (<attempt>-busbw), so the morning reader sees the measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from harness.core.backend import ClusterBackend
from harness.core.job import Job, make_job
from harness.core.runner import run_job
from harness.core.validate import check_case_config
from harness.core.watch import WatchLimits
from harness.errors import HarnessError

if TYPE_CHECKING:  # check.py validates the gate through this module
    from harness.campaign.check import PlannedEntry

CASE = "allreduce"
TIMEOUT_S = 900.0


def busbw_job(planned: PlannedEntry, run_id: str, fix_hp: str | None) -> Job:
    """The all-reduce job of the same vendor, accelerator and nodes x processes."""
    entry = planned.entry
    return make_job(CASE, entry.vendor, planned.accelerator, entry.config, fix_hp=fix_hp, timeout_s=TIMEOUT_S,
                    run_id=f"{run_id}-busbw")


def check_busbw_job(planned: PlannedEntry, fix_hp: str | None) -> None:
    """Refuse (UserError) a suite whose gate cannot run for this job: no
    all-reduce hardware file for its accelerator, a bad fix_hp key."""
    check_case_config(busbw_job(planned, "campaign-check", fix_hp))


def busbw_problem(planned: PlannedEntry, run_id: str, min_gbps: float, fix_hp: str | None,
                  backend: ClusterBackend, results: Path, console: Console) -> str | None:
    """None when the nodes reach min_gbps; otherwise the fact, naming the gate's run."""
    job = busbw_job(planned, run_id, fix_hp)
    limits = WatchLimits.for_cluster(planned.inventory.cluster, TIMEOUT_S, None)
    try:
        result = run_job(job, planned.inventory, backend, results, console, limits=limits)
    except HarnessError as exc:  # refused by the preflight (a host away, orphans): nothing was measured
        return f"bandwidth check {job.run_id} could not start: {str(exc).splitlines()[0]}"
    nodes = ", ".join(node.host for node in result.nodes) or "the job's nodes"
    if result.status != "success":
        cause = (result.failure or "failed").strip().splitlines()[0]
        return f"bandwidth check {job.run_id} on {nodes} failed ({result.failure_kind}): {cause}"
    peak = result.bandwidth.peak_busbw_gbps if result.bandwidth else None
    if peak is None:
        return f"bandwidth check {job.run_id} on {nodes} reported no bus bandwidth"
    if peak < min_gbps:
        return (f"all-reduce bus bandwidth {peak:.3g} GB/s on {nodes} is below gates.min_busbw_gbps "
                f"{min_gbps:g} (run {job.run_id})")
    return None
