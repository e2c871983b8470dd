"""Attempts the core runner did not record itself: one refused before it started
(a failing health gate, a host that did not answer the preflight), and one that
was running when the controller died (found again on --resume). Each still gets
its results.json, README.md, report.html and history row under its own run id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.campaign.check import PlannedEntry
from harness.campaign.state import Attempt, now_iso
from harness.core.backend import ClusterBackend
from harness.core.job import Job
from harness.core.record import RecordError, record_run
from harness.core.results import FailureKind, NodeOutcome, RunResult
from harness.core.runner import build_plan
from harness.errors import HarnessError
from harness.faults.codes import Fault


def _out_dir(results: Path, job: Job) -> Path:
    return results / job.run_id / job.case / job.config_name


def _plan_text(job: Job, planned: PlannedEntry, backend: ClusterBackend) -> str:
    try:
        return build_plan(job, planned.inventory, backend).render()
    except HarnessError as exc:
        return f"(no plan: {exc})\n"


def _record(result: RunResult, job: Job, planned: PlannedEntry, backend: ClusterBackend, results: Path,
            warn: Callable[[str], None]) -> None:
    try:
        record_run(result, _plan_text(job, planned, backend), _out_dir(results, job), results)
    except RecordError as exc:
        warn(str(exc))


def _failed_result(job: Job, kind: FailureKind, failure: str, started_at: str,
                   nodes: list[NodeOutcome] | None = None, faults: list[Fault] | None = None) -> RunResult:
    return RunResult(run_id=job.run_id, case=job.case, vendor=job.vendor, accelerator=job.accelerator,
                     nnodes=job.nnodes, nproc_per_node=job.nproc_per_node, precision="unknown",
                     fix_hp=job.fix_hp or "/", status="failed", failure=failure, failure_kind=kind,
                     nodes=nodes or [], faults=faults or [], started_at=started_at, finished_at=now_iso())


def record_unstarted(job: Job, planned: PlannedEntry, backend: ClusterBackend, results: Path, kind: FailureKind,
                     failure: str, warn: Callable[[str], None], faults: list[Fault] | None = None) -> RunResult:
    """The record of an attempt that started nothing (a gate, the preflight), with
    the faults it found on the hosts."""
    result = _failed_result(job, kind, failure, now_iso(), faults=faults)
    _record(result, job, planned, backend, results, warn)
    return result


def recover_attempt(attempt: Attempt, planned: PlannedEntry, backend: ClusterBackend, results: Path,
                    warn: Callable[[str], None]) -> None:
    """An attempt the state says is running, but whose controller is gone: its
    containers are found by label, its logs collected into results/<run>/collected/
    and the containers removed; the attempt is `abandoned` (it does not count as
    a retry), or what its record says when the run had finished and was recorded."""
    job = planned.make_job(attempt.run_id)
    hosts = planned.hosts
    recorded = _out_dir(results, job) / "results.json"
    try:
        leftovers = backend.leftovers(hosts, job.run_id)
    except HarnessError as exc:
        leftovers = []
        warn(f"cannot list the containers of {job.run_id}: {exc}")
    if recorded.is_file():  # it ended and was recorded; only the state did not learn it
        result = RunResult.model_validate_json(recorded.read_text(encoding="utf-8"))
        attempt.status = "success" if result.status == "success" else "failed"
        attempt.failure_kind, attempt.failure = result.failure_kind, result.failure
        attempt.results_json, attempt.finished_at = str(recorded), result.finished_at or now_iso()
        if leftovers:
            backend.remove(leftovers)
        return
    dest = results / job.run_id / "collected"
    nodes: list[NodeOutcome] = []
    notes: list[str] = []
    try:
        nodes = backend.collect_again(job.run_id, hosts, dest)
        remaining = backend.leftovers(hosts, job.run_id)
        if remaining:
            backend.remove(remaining)
    except HarnessError as exc:
        notes.append(f"collecting or removing failed: {exc}; `python -m harness collect {job.run_id}` retries it")
        warn(notes[-1])
    collected = [n for n in nodes if n.collected]
    failure = (f"the controller stopped while this run was running (killed or rebooted); on resume "
               f"{len(leftovers)} container(s) of it were found by label and removed, the logs of "
               f"{len(collected)} node(s) collected into {dest}") + "".join(f"; {note}" for note in notes)
    result = _failed_result(job, "interrupted", failure, attempt.started_at, nodes)
    _record(result, job, planned, backend, results, warn)
    attempt.status, attempt.failure_kind, attempt.failure = "abandoned", "interrupted", failure
    attempt.results_json, attempt.finished_at = str(recorded), now_iso()
    warn(f"run {job.run_id}: {failure}")
