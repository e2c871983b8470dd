"""The fixed flow around a cluster backend:

preflight -> image -> launch -> wait -> collect (+ cleanup) -> parse -> results.json

Whatever happens after launch (a failing node, a timeout, Ctrl-C, a lost host),
the containers are stopped, every log that can be reached is collected and the
containers are removed before the run ends.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from harness.backends.base import ClusterBackend, NodeState
from harness.backends.image import plan_image
from harness.backends.launch import RunPlan
from harness.core.events import Event, last, parse_lines, read_event_files
from harness.core.inventory import Inventory
from harness.core.job import Job
from harness.core.metrics import compute_metrics
from harness.core.results import Metrics, NodeOutcome, RunResult
from harness.core.vendor import load_vendor
from harness.devices.monitor import peak_memory
from harness.errors import HarnessError, HostUnreachable, RemoteCommandError, RunFailed
from harness.hostinfo.environment import EnvironmentInfo, FrameworkVersions, differences

POLL_S = 0.25
PROGRESS_S = 5.0
PROGRESS_LOG_S = 30.0
# Consecutive failed polls of a host before it counts as lost.
HOST_LOST_AFTER = 20


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; the run was stopped, collected and recorded."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.run_id)
        self.result = result


@dataclass
class WaitOutcome:
    ok: bool
    failure: str | None = None
    failed_ranks: list[int] = field(default_factory=list)


class PhaseClock:
    def __init__(self, console: Console) -> None:
        self.seconds: dict[str, float] = {}
        self._console = console

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            self._console.print(f"[dim]{name:<9} {elapsed:7.2f} s[/dim]")


def build_plan(job: Job, inventory: Inventory, backend: ClusterBackend) -> RunPlan:
    vendor = load_vendor(job.vendor)
    params = {**inventory.cluster.template_params, **job.template_overrides}
    return backend.plan(job, inventory, vendor, plan_image(vendor, params))


def _progress_line(plan: RunPlan, backend: ClusterBackend) -> str | None:
    try:
        step = last(parse_lines(backend.tail(plan, 0, 40)), "step")
    except HarnessError:
        return None
    if step is None:
        return None
    value = step.value
    step_s = float(value.get("step_s") or 0.0)
    rate = float(value.get("samples", 0)) / step_s if step_s > 0 else 0.0
    return f"epoch {value.get('epoch')} step {value.get('step')}: {rate:,.1f} samples/s"


def wait_for_nodes(plan: RunPlan, backend: ClusterBackend, console: Console) -> WaitOutcome:
    deadline = time.monotonic() + plan.job.timeout_s
    misses = 0
    next_progress = time.monotonic() + PROGRESS_S
    with console.status("training", spinner="dots") as status:
        while True:
            try:
                states: list[NodeState] = backend.poll(plan)
                misses = 0
            except (HostUnreachable, RemoteCommandError) as exc:
                misses += 1
                if misses >= HOST_LOST_AFTER:
                    return WaitOutcome(False, f"lost contact with a host while waiting: {exc}")
                time.sleep(POLL_S)
                continue
            failed = [s for s in states if not s.running and s.exit_code not in (0, None)]
            vanished = [s for s in states if not s.running and s.exit_code is None]
            if failed or vanished:
                ranks = [s.node_rank for s in failed + vanished]
                detail = ", ".join(
                    f"node {s.node_rank} ({plan.nodes[s.node_rank].host.name}) "
                    + (f"exited {s.exit_code}" if s.exit_code is not None else s.detail)
                    for s in failed + vanished)
                return WaitOutcome(False, detail, ranks)
            if all(not s.running for s in states):
                return WaitOutcome(True)
            if time.monotonic() > deadline:
                return WaitOutcome(False, f"timed out after {plan.job.timeout_s:.0f} s")
            if time.monotonic() >= next_progress:
                line = _progress_line(plan, backend)
                if line and console.is_terminal:
                    status.update(f"training: {line}")
                elif line:  # an overnight log has no spinner: a line now and then instead
                    console.print(f"training: {line}")
                next_progress = time.monotonic() + (PROGRESS_S if console.is_terminal else PROGRESS_LOG_S)
            time.sleep(POLL_S)


def _failure_report(outcome: WaitOutcome, nodes: list[NodeOutcome], by_rank: dict[int, list[Event]]) -> str:
    lines = [outcome.failure or "run failed"]
    for rank in sorted(by_rank):
        stop = last(by_rank[rank], "run_stop")
        if stop is not None and stop.value.get("status") == "failed":
            lines.append(f"rank {rank}: {stop.value.get('error', 'failed')}")
    for node in nodes:
        if node.node_rank in outcome.failed_ranks or (node.exit_code not in (0, None)):
            lines.append(f"--- last lines of node {node.node_rank} ({node.host}, {node.log_dir}):")
            lines += node.last_lines[-15:]
    return "\n".join(lines)


# Called with the hosts' environments after preflight, before anything is built
# or started; raising a UserError there stops the run (the REPRO drift check).
EnvironmentCheck = Callable[[RunPlan, dict[str, EnvironmentInfo]], None]


def _report_host_differences(envs: dict[str, EnvironmentInfo], console: Console) -> None:
    for diff in differences(envs):
        values = ", ".join(f"{host}={value}" for host, value in diff.values.items())
        console.print(Text.assemble(("hosts differ: ", "yellow"), f"{diff.field}: {values}"))


def _record_container_framework(environments: dict[str, EnvironmentInfo], nodes: list[NodeOutcome],
                                by_rank: dict[int, list[Event]]) -> None:
    """The framework a host ran is the container's: take it from the training
    processes' own report (the `world` event) rather than the host's python."""
    for events in by_rank.values():
        world = last(events, "world")
        if world is None or not isinstance(world.value.get("framework"), dict):
            continue
        node = next((n for n in nodes if n.node_rank == world.value.get("node_rank")), None)
        env = environments.get(node.host) if node else None
        if node is None or env is None or env.framework.source.startswith("training process"):
            continue
        try:
            env.framework = FrameworkVersions(**world.value["framework"],
                                              source=f"training process in container {node.container}")
        except (TypeError, ValidationError):
            continue


def _device_memory(metrics: Metrics, nodes: list[NodeOutcome]) -> Metrics:
    """The vendor tool's peak over every host, when it produced readings."""
    peaks = [p for node in nodes if (p := peak_memory(Path(node.log_dir) / "monitor.csv")) is not None]
    if not peaks:
        return metrics
    used, total = max(peaks, key=lambda p: p[0])
    return metrics.model_copy(update={"mem_used_gib": used, "mem_total_gib": total,
                                      "mem_source": "device monitor (vendor tool)"})


def run_job(job: Job, inventory: Inventory, backend: ClusterBackend, results_root: Path,
            console: Console | None = None, check_environment: EnvironmentCheck | None = None) -> RunResult:
    console = console or Console(stderr=True, soft_wrap=True)
    clock = PhaseClock(console)
    started = dt.datetime.now(dt.timezone.utc)
    plan = build_plan(job, inventory, backend)
    out_dir = results_root / job.run_id / job.case / job.config_name
    console.print(f"[bold]run {job.run_id}[/bold]: {job.case} on {job.vendor} {job.config_name} "
                  f"-> {out_dir}")

    with clock.phase("preflight"):
        report = backend.preflight(plan)
    for warning in report.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), warning))
    if check_environment is not None:
        # A reproduction checks the hosts against the page before anything is built.
        with clock.phase("environment"):
            environments = backend.environment(plan)
        _report_host_differences(environments, console)
        check_environment(plan, environments)
        with clock.phase("image"):
            image_id = backend.prepare_image(plan)
    else:
        with ThreadPoolExecutor(max_workers=1) as pool:
            capture = pool.submit(backend.environment, plan)
            with clock.phase("image"):
                image_id = backend.prepare_image(plan)
            with clock.phase("environment"):  # only what the image phase did not hide
                environments = capture.result()
        _report_host_differences(environments, console)

    outcome = WaitOutcome(False, "interrupted before the run finished")
    interrupted = False
    nodes: list[NodeOutcome] = []
    removed: list[str] = []
    try:
        with clock.phase("launch"):
            backend.launch(plan)
            backend.start_monitors(plan, out_dir)
        with clock.phase("wait"):
            try:
                outcome = wait_for_nodes(plan, backend, console)
            except KeyboardInterrupt:
                # Stop, collect and report as for any failure, then let the interrupt through.
                interrupted = True
                outcome = WaitOutcome(False, "interrupted (SIGINT/SIGTERM) while training")
        if not outcome.ok:
            console.print(Text.assemble(("failed: ", "red"), f"{outcome.failure}; stopping the other nodes"))
    finally:
        with clock.phase("collect"):
            backend.stop_monitors()
            if not outcome.ok:
                backend.stop(plan, [n.node_rank for n in plan.nodes])
            try:
                nodes = backend.collect(plan, out_dir)
            finally:
                try:
                    removed = backend.cleanup(plan)
                except RunFailed as exc:
                    console.print(Text.assemble(("warning: ", "yellow"), f"{exc}; remove leftovers later with "
                                                f"`python -m harness clean --run-id {job.run_id}`"))
        if removed:
            console.print(f"[dim]removed containers: {', '.join(removed)}[/dim]")

    with clock.phase("parse"):
        by_rank = read_event_files(out_dir)
        _record_container_framework(environments, nodes, by_rank)
        metrics = None
        failure = None if outcome.ok else _failure_report(outcome, nodes, by_rank)
        config_event = last(by_rank.get(0, []), "config")
        try:
            metrics = _device_memory(compute_metrics(by_rank), nodes)
            if outcome.ok and len(by_rank) != job.world_size:
                failure = f"expected event logs from {job.world_size} ranks, collected {len(by_rank)}"
        except RunFailed as exc:
            failure = failure or str(exc)
        world = last(by_rank.get(0, []), "world")

    result = RunResult(
        run_id=job.run_id,
        case=job.case,
        vendor=job.vendor,
        accelerator=job.accelerator,
        nnodes=job.nnodes,
        nproc_per_node=job.nproc_per_node,
        precision=str(world.value.get("precision", "unknown")) if world else "unknown",
        # As the pages write it: the hardware file's batch size / lr, then FIX_HP.
        fix_hp=str((config_event.value.get("fix_hp") if config_event else None) or job.fix_hp or "/"),
        status="success" if failure is None else "failed",
        failure=failure,
        metrics=metrics,
        nodes=nodes,
        image=f"{plan.image.tag} ({image_id})",
        effective_config=config_event.value if config_event else {},
        environment={host: info.model_dump() for host, info in environments.items()},
        phase_seconds=clock.seconds,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
    (out_dir / "plan.txt").write_text(plan.render(), encoding="utf-8")
    if interrupted:
        raise RunInterrupted(result)
    return result
