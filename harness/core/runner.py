"""The fixed flow around a cluster backend:

preflight -> environment + image -> launch -> watch -> stop, collect, clean up -> parse -> record

Preflight refuses bad input before anything exists (exit 2). After it, every
way the run can end (success, a failing rank, a lost host, a stall, the
deadline, an image that cannot be built, Ctrl-C/SIGTERM/SIGHUP) stops what
runs, collects every log that can be reached, removes the containers of the
reachable hosts and writes the record (harness/core/record.py).
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

from harness.core.attribution import Attribution, attribute
from harness.core.backend import ClusterBackend
from harness.core.device_use import low_device_use
from harness.core.diagnose import failure_report, interrupted_outcome, refine_kind, split_failures
from harness.core.energy import run_energy
from harness.core.events import Event, last, read_event_files
from harness.core.hang import hang_triage
from harness.core.inventory import Inventory
from harness.core.job import Job
from harness.core.loss_trend import loss_warning
from harness.core.metrics import compute_metrics
from harness.core.monitor_why import monitor_why
from harness.core.monitor_window import training_monitors
from harness.core.node_facts import node_facts
from harness.core.plan import NodePlan, RunPlan
from harness.core.rank_error import with_rank_errors
from harness.core.record import record_run
from harness.core.results import HangTriage, Metrics, NodeOutcome, RunResult
from harness.core.vendor import load_vendor
from harness.core.watch import StepProgress, WaitOutcome, Watcher, WatchLimits
from harness.devices.sampler import peak_memory
from harness.errors import HarnessError, HostUnreachable, RunFailed, UserError
from harness.expect.efficiency import with_efficiency
from harness.fabric.record import bandwidth_result, fabric_verdict, with_transports
from harness.faults.attribute import faults_from_stage, run_faults
from harness.faults.codes import Fault
from harness.hostinfo.compare import differences
from harness.hostinfo.model import EnvironmentInfo, FrameworkVersions

STACK_DUMP_WAIT_S = 2.0  # for the training processes to write their stacks


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP during the run; it was stopped, collected and recorded."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.run_id)
        self.result = result


# Every phase the runner times, for one column of names whatever the phase.
PHASES = ("preflight", "allocate", "environment", "image", "launch", "wait", "collect", "parse")
PHASE_WIDTH = max(len(name) for name in PHASES)


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
            self._console.print(f"[dim]{name:<{PHASE_WIDTH}} {elapsed:7.2f} s[/dim]")


def build_plan(job: Job, inventory: Inventory, backend: ClusterBackend) -> RunPlan:
    return backend.plan(job, inventory, load_vendor(job.vendor))


# Called with the hosts' environments after preflight, before anything is built
# or started; raising a UserError there stops the run (the REPRO drift check).
EnvironmentCheck = Callable[[RunPlan, dict[str, EnvironmentInfo]], None]


def _warn(console: Console, message: str) -> None:
    console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


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


def _device_memory(metrics: Metrics, nodes: list[NodeOutcome], devices_used: int) -> Metrics:
    """The vendor tool's peak over every host, when it produced readings, counting
    only the devices the job ran on (launch makes them visible as 0..nproc-1): a
    colleague's process on device 7 is not this job's memory."""
    used = range(devices_used)
    peaks = [p for node in nodes if (p := peak_memory(Path(node.log_dir) / "monitor.csv", used)) is not None]
    if not peaks:
        return metrics
    peak_used, total = max(peaks, key=lambda p: p[0])
    return metrics.model_copy(update={"mem_used_gib": peak_used, "mem_total_gib": total,
                                      "mem_source": "device monitor (vendor tool)"})


def _image_text(plan: RunPlan, image_id: str) -> str:
    """What the nodes ran: the image and its id, or (no image) what the payload reported."""
    if plan.image is None:
        return image_id
    return f"{plan.image.tag} ({image_id})" if image_id else plan.image.tag


@dataclass
class _Run:
    """What the flow learnt so far; the record is made from it however the run ended."""

    outcome: WaitOutcome = field(default_factory=lambda: WaitOutcome(False, "interrupted", "interrupted"))
    launched: bool = False
    stage: str = "allocate"  # what was under way when a failure came: named in the report
    interrupted: bool = False
    image_id: str = ""
    environments: dict[str, EnvironmentInfo] = field(default_factory=dict)
    nodes: list[NodeOutcome] = field(default_factory=list)
    left_on_hosts: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)  # what the error that ended a stage blames on a host
    frozen_nodes: list[int] = field(default_factory=list)  # a stalled run's nodes found paused or stopped


def _prepare_and_launch(plan: RunPlan, backend: ClusterBackend, clock: PhaseClock, console: Console,
                        check_environment: EnvironmentCheck | None, run: _Run, out_dir: Path) -> None:
    """The image, then the workloads and their monitors. The hosts' environment is
    captured first where a reproduction checks it against the page; otherwise beside
    the image and the launch (it starts nothing), and waited for before the wait."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        capture = None
        if check_environment is not None:
            with clock.phase("environment"):
                run.environments = backend.environment(plan)
            _report_host_differences(run.environments, console)
            check_environment(plan, run.environments)
        else:
            capture = pool.submit(backend.environment, plan)
        with clock.phase("image"):
            run.image_id = backend.prepare_image(plan)
        with clock.phase("launch"):
            run.launched, run.stage = True, "launch"  # from here on, containers may exist
            backend.launch(plan)
            backend.start_monitors(plan, out_dir)
        if capture is not None:
            with clock.phase("environment"):  # only what the image and the launch did not hide
                try:
                    run.environments = capture.result()
                except HarnessError as exc:
                    _warn(console, f"environment capture failed: {exc}")
            _report_host_differences(run.environments, console)


def _uncollected(node: NodePlan, out_dir: Path, note: str) -> NodeOutcome:
    """The outcome of a node whose logs are still on its host (remote_run_dir says where)."""
    return NodeOutcome(host=node.host.name, node_rank=node.node_rank, container=node.container_name, exit_code=None,
                       log_dir=str(out_dir / node.dir_name), collected=False, remote_run_dir=node.host_run_dir,
                       notes=[note])


def _teardown(plan: RunPlan, backend: ClusterBackend, out_dir: Path, console: Console, run: _Run) -> None:
    """Stop, collect and remove on every host that still answers; record what stays on the others."""
    if not run.launched:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The monitors write here, on their own connections: they stop while the logs come back.
        stopping = pool.submit(backend.stop_monitors)
        try:
            _stop_collect_remove(plan, backend, out_dir, console, run)
        finally:
            try:
                stopping.result()
            except (HarnessError, OSError) as exc:
                _warn(console, f"stopping the monitors failed: {exc}")


def _stop_collect_remove(plan: RunPlan, backend: ClusterBackend, out_dir: Path, console: Console, run: _Run) -> None:
    lost = set(run.outcome.lost_nodes)
    reachable = [node.node_rank for node in plan.nodes if node.node_rank not in lost]
    if run.outcome.kind == "stalled" and reachable:
        # Where did it hang? Every rank writes its Python stacks into its logs.
        run.frozen_nodes = backend.dump_stacks(plan, reachable)
        time.sleep(STACK_DUMP_WAIT_S)
    if not run.outcome.ok and reachable:
        backend.stop(plan, reachable)
    try:
        run.nodes = backend.collect(plan, out_dir, reachable) if reachable else []
    except (HarnessError, OSError) as exc:  # the backend's own guard failed: keep going to the cleanup
        _warn(console, f"collecting the logs failed: {exc}")
        run.nodes = [_uncollected(node, out_dir, f"not collected: {exc}")
                     for node in plan.nodes if node.node_rank in reachable]
    for node in plan.nodes:
        if node.node_rank in lost:
            run.nodes.append(_uncollected(node, out_dir, f"host lost: its workload {node.container_name} and "
                                                         f"run folder {node.host_run_dir} stay there until it is back"))
            run.left_on_hosts.append(f"{node.host.name}: workload {node.container_name} (a container or a "
                                     f"process group), run folder {node.host_run_dir}")
    run.nodes.sort(key=lambda n: n.node_rank)
    try:
        removed = backend.cleanup(plan, reachable, {node.node_rank for node in run.nodes if node.collected})
    except HarnessError as exc:  # a host that went silent meanwhile: what stays there is reported
        run.left_on_hosts.append(str(exc))
        removed = []
    if removed:
        console.print(f"[dim]removed containers: {', '.join(removed)}[/dim]")
    if run.left_on_hosts:
        _warn(console, "left on the hosts: " + "; ".join(run.left_on_hosts)
              + "; when they answer again (or there is room here again), "
              f"`python -m harness collect {plan.job.run_id} --hosts {plan.inventory_source}` brings the logs "
              "back and removes the containers")


def _attribute(plan: RunPlan, run: _Run, by_rank: dict[int, list[Event]], out_dir: Path,
               inventory: Inventory, hang: HangTriage | None) -> Attribution:
    facts = node_facts(plan, run.outcome, run.nodes, by_rank, hang)
    return attribute(by_rank, plan.job.world_size, plan.job.nproc_per_node, facts, monitor_why(out_dir, plan),
                     inventory.cluster.straggler_threshold, inventory.cluster.input_bound_share)


def _with_rank_errors(run: _Run, by_rank: dict[int, list[Event]], nproc_per_node: int) -> list[NodeOutcome]:
    split = split_failures(run.outcome, by_rank)
    return with_rank_errors(run.nodes, run.outcome.failed_nodes, nproc_per_node, [f.rank for f in split.own],
                            [f.rank for f in split.stopped])


def _release(plan: RunPlan, backend: ClusterBackend, console: Console) -> None:
    try:
        backend.release(plan)
    except HarnessError as exc:
        _warn(console, f"releasing the allocation failed: {exc}")


def run_job(job: Job, inventory: Inventory, backend: ClusterBackend, results_root: Path,
            console: Console | None = None, check_environment: EnvironmentCheck | None = None,
            limits: WatchLimits | None = None, clean_orphans: bool = False,
            annotate: Callable[[RunResult, Path], RunResult] | None = None,
            on_progress: Callable[[StepProgress], None] | None = None,
            refuse_held: Callable[[], None] | None = None) -> RunResult:
    """Run the job to its end and record it. `annotate` adds to the result before
    it is recorded (a reproduction's comparison with the page); `on_progress` is
    told rank 0's latest step while it trains (a campaign's live view); `refuse_held`
    raises when another controller holds the hosts (bench: a campaign's lock). It
    runs beside the preflight, which starts nothing, and its verdict comes first."""
    console = console or Console(stderr=True, soft_wrap=True)
    limits = limits or WatchLimits(timeout_s=job.timeout_s)
    clock = PhaseClock(console)
    started = dt.datetime.now(dt.timezone.utc)
    plan = build_plan(job, inventory, backend)
    out_dir = results_root / job.run_id / job.case / job.config_name
    console.print(f"[bold]run {job.run_id}[/bold]: {job.case} on {job.vendor} {job.config_name}")

    with clock.phase("preflight"), ThreadPoolExecutor(max_workers=1) as pool:
        # Bad input, held and unusable hosts end here, with nothing started. A campaign's
        # running containers would look like orphans: its lock is named instead, and
        # checked first where orphans are to be removed.
        held = None
        if refuse_held is not None and clean_orphans:
            refuse_held()
        elif refuse_held is not None:
            held = pool.submit(refuse_held)
        try:
            report = backend.preflight(plan, clean_orphans=clean_orphans)
        finally:
            if held is not None:
                held.result()
    # From here on the run always ends recorded in out_dir: only now is it worth naming.
    console.print(f"run {job.run_id}: results -> {out_dir}", highlight=False)
    for warning in report.warnings:
        _warn(console, warning)

    run = _Run()
    try:
        try:
            with clock.phase("allocate"):
                plan = backend.allocate(plan)
            if plan.allocation:
                console.print(f"allocated: {plan.allocation}")
            run.stage = "image"
            _prepare_and_launch(plan, backend, clock, console, check_environment, run, out_dir)
            with clock.phase("wait"):
                run.outcome = Watcher(plan, backend, console, limits, on_progress).wait()
        except KeyboardInterrupt:
            run.interrupted = True
            run.outcome = WaitOutcome(False, "interrupted", "interrupted (SIGINT/SIGTERM/SIGHUP) "
                                      + ("while training" if run.launched else "before training started")).decided_now()
        except HostUnreachable as exc:  # a host lost while building or starting: not bad input
            run.outcome = WaitOutcome(False, "infra", f"{run.stage} failed: {exc}").decided_now()
            run.faults = faults_from_stage(exc, job.run_id)
        except UserError:
            raise  # the REPRO gate: nothing was started
        except HarnessError as exc:
            run.outcome = WaitOutcome(False, "infra", f"{run.stage} failed: {exc}").decided_now()
            run.faults = faults_from_stage(exc, job.run_id)  # an image copy that failed on a host
        if not run.outcome.ok:
            console.print(Text.assemble(("failed: ", "red"), f"{run.outcome.failure}; stopping the other nodes"),
                          soft_wrap=True)
    finally:
        with clock.phase("collect"):
            try:
                _teardown(plan, backend, out_dir, console, run)
            except KeyboardInterrupt:
                run.interrupted = True
                _warn(console, "interrupted again during cleanup: containers may be left; "
                      f"`python -m harness clean --run-id {job.run_id}` removes them")
            finally:
                _release(plan, backend, console)

    with clock.phase("parse"):
        by_rank = read_event_files(out_dir)
        _record_container_framework(run.environments, run.nodes, by_rank)
        run.outcome = interrupted_outcome(run.outcome, by_rank, run.interrupted)
        run.nodes = _with_rank_errors(run, by_rank, job.nproc_per_node)  # a failed node shows its rank's own error
        metrics = None
        kind = refine_kind(run.outcome, by_rank)
        # A stalled run: where each rank stood when its stacks were dumped, outliers first.
        hang = hang_triage(run.nodes, job.world_size, run.outcome.stalled_ranks,
                           run.frozen_nodes) if run.outcome.kind == "stalled" else None
        failure = None if run.outcome.ok else failure_report(run.outcome, run.nodes, by_rank, hang)
        config_event = last(by_rank.get(0, []), "config")
        try:
            metrics = _device_memory(compute_metrics(by_rank), run.nodes, job.nproc_per_node)
            if run.outcome.ok and len(by_rank) != job.world_size:
                failure = f"expected event logs from {job.world_size} ranks, collected {len(by_rank)}"
                kind = "infra"
        except RunFailed as exc:
            uncollected = [f"node {n.node_rank} ({n.host})" for n in run.nodes if not n.collected]
            failure = failure or (f"logs of {', '.join(uncollected)} could not be collected: {exc}" if uncollected
                                  else str(exc))
            kind = kind or ("infra" if uncollected else "job")
        world = last(by_rank.get(0, []), "world")
        # What the collective library chose on each node; a fallback on an ib fabric is infra.
        fabric = fabric_verdict(inventory.cluster.fabric, plan.vendor.collective, run.nodes)
        run.nodes = with_transports(run.nodes, fabric.transports)
        failure, kind, warnings = fabric.judge(failure, kind)
        warnings += [w for w in [loss_warning(by_rank)] if w is not None]  # real data: did it learn?
        attribution = _attribute(plan, run, by_rank, out_dir, inventory, hang)
        monitors = training_monitors(run.nodes, by_rank, job.nproc_per_node)  # energy, idle devices
        energy = run_energy(monitors, plan.vendor, metrics.samples if metrics else 0)
        warnings += low_device_use(monitors, inventory.cluster.min_device_util)
    for warning in warnings:
        _warn(console, warning)

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
        failure_kind=None if failure is None else kind,
        lost_hosts=[plan.nodes[rank].host.name for rank in run.outcome.lost_nodes],
        left_on_hosts=run.left_on_hosts,
        allocation=plan.allocation or None,
        metrics=metrics,
        bandwidth=bandwidth_result(by_rank),
        hang=hang,
        warnings=warnings,
        ranks=attribution.ranks,
        straggler_threshold=inventory.cluster.straggler_threshold,
        stragglers=attribution.stragglers,
        input_bound=attribution.input_bound,
        node_verdicts=attribution.verdicts,
        energy=energy,
        nodes=run.nodes,
        image=_image_text(plan, run.image_id),
        effective_config=config_event.value if config_event else {},
        environment={host: info.model_dump() for host, info in run.environments.items()},
        phase_seconds=clock.seconds,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    result = with_efficiency(result, by_rank, inventory)  # MFU and % of expected (harness/expect/)
    result.faults = run_faults(result, inventory.cluster.fabric, run.faults)  # fault codes per host (harness/faults/)
    if annotate is not None:
        result = annotate(result, out_dir)
    record_run(result, plan.render(), out_dir, results_root)
    if run.interrupted:
        raise RunInterrupted(result)
    return result
