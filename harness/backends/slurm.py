"""The Slurm backend: one sbatch allocation per job (harness/backends/slurm_request.py).

The controller runs the Slurm client commands itself (it is a login node, or
the cluster's own machine). Inside the allocation it reaches each node as a job
step (`srun --jobid J --overlap -w NODE`), so the environment capture, the
monitors, the image check and the preflight checks of the SSH backend run on
the allocated nodes unchanged. Logs and status files are written into the
shared `work_dir` and read from there. Slurm's own states map onto the failure
kinds: NODE_FAIL, BOOT_FAIL, PREEMPTED and a cancel from outside are `infra`,
TIMEOUT is `timeout`, a container's exit code != 0 is `job`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from harness import REPO_ROOT
from harness.backends import docker_image
from harness.backends.bare import BarePayload
from harness.backends.bare_python import python_environment
from harness.backends.docker import DockerPayload
from harness.backends.docker_request import DockerNode, image_commands, image_of
from harness.backends.fabric_checks import check_inventory_fabric
from harness.backends.image import plan_job_image
from harness.backends.launch import (
    ENV_FILE_NAME,
    check_hosts,
    container_env,
    container_name,
    node_labels,
    train_argv,
)
from harness.backends.monitors import Monitors
from harness.backends.payload import Payload
from harness.backends.slurm_nodes import SrunTransport, collect_run_dir, job_fields, labelled_host
from harness.backends.slurm_request import (
    BATCH_SCRIPT,
    CONTAINER_LOG,
    EXIT_STATUS,
    GO_FILE,
    STEP_SCRIPT,
    SlurmRequest,
    SlurmSettings,
    node_host,
    slurm_request,
)
from harness.backends.transport import CommandResult, LocalTransport, Transport, read_tail
from harness.core.backend import ClusterBackend, Leftover, NodeState, NodeWatch, PollingWatch, PreflightReport
from harness.core.events import Event, parse_lines
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import NodePlan, RunPlan, node_dir_name
from harness.core.results import FailureKind, NodeOutcome
from harness.core.vendor import VendorSpec
from harness.errors import HarnessError, RunFailed, UserError
from harness.hostinfo.model import EnvironmentInfo
from harness.parallel import run_all
from harness.secrets import env_file_text

QUICK_S = 30.0
STOP_WAIT_S = 60.0  # after scancel: how long the tasks may take to save their logs
BATCH_END_WAIT_S = 15.0  # after the tasks' exit: how long the batch script may take to end
_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED",
           "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
          "DEADLINE"}
_KINDS: dict[str, FailureKind] = {"NODE_FAIL": "infra", "BOOT_FAIL": "infra", "PREEMPTED": "infra",
                                  "CANCELLED": "infra", "TIMEOUT": "timeout", "DEADLINE": "timeout"}

class SlurmBackend(ClusterBackend):
    uses_host_list = False

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._transports: dict[str, Transport] = {}
        self._monitors = Monitors()
        try:
            self.settings = SlurmSettings(**inventory.cluster.backend_settings)
        except (ValidationError, TypeError) as exc:
            raise UserError(f"the slurm section is not valid: {exc}", file=inventory.source,
                            field="cluster.slurm") from exc
        payload = inventory.cluster.payload.type
        if payload in ("pyxis", "bare"):
            self.settings = self.settings.model_copy(update={"container": payload})
        # On the allocated nodes: the payload's host checks, environment capture and stack dumps.
        self.node_payload: Payload = BarePayload(inventory) if payload == "bare" else DockerPayload(inventory)
        self.controller = LocalTransport("controller")

    def _job(self, plan: RunPlan) -> str:
        """The plan's Slurm job (allocate binds it to the plan: the run's state is the run's)."""
        job_id = self.slurm(plan).job_id
        if not job_id:
            raise RunFailed("no Slurm allocation yet: nothing runs on the nodes before it")
        return job_id

    def _on(self, plan: RunPlan, host: Host) -> Transport:
        """Commands on one allocated node, as steps of the plan's job."""
        key = f"{self._job(plan)}/{host.name}"
        if key not in self._transports:
            self._transports[key] = SrunTransport(self._job(plan), host.name)
        return self._transports[key]

    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        hosts = [node.host for node in plan.nodes]
        captured = run_all(lambda host: self.node_payload.capture(self._on(plan, host), host, plan.vendor.smi), hosts)
        return {host.name: info for host, info in zip(hosts, captured)}

    def capture_hosts(self, hosts: list[Host], smi: str | None) -> dict[str, EnvironmentInfo]:
        """A scheduler's nodes are not listed in the inventory: every node of the partition
        that is up is allocated for a few minutes (the capture's own job), captured, released."""
        count = self._nodes_up()
        argv = ["sbatch", "--parsable", "--job-name", "bench-env-capture", "--nodes", str(count),
                "--ntasks-per-node", "1", "--time", "10", "--output", "/dev/null"]
        if self.settings.partition:
            argv += ["--partition", self.settings.partition]
        if self.settings.account:
            argv += ["--account", self.settings.account]
        submitted = self.controller.run([*argv, *self.settings.sbatch_args, "--wrap", "sleep 600"], timeout=QUICK_S)
        job_id = submitted.output.strip().splitlines()[-1].split(";")[0] if submitted.ok and submitted.output else ""
        if not job_id.isdigit():
            raise RunFailed(f"sbatch (the environment capture's allocation) failed: {submitted.output.strip()[-500:]}")
        try:
            fields = self._wait_running(job_id)
            names = self._scontrol("show", "hostnames", fields.get("NodeList", "")).output.split()
            nodes = [node_host(self.settings, name, name) for name in names]
            captured = run_all(lambda host: self.node_payload.capture(SrunTransport(job_id, host.name), host, smi), nodes)
        finally:
            self._cancel(job_id)
        return {host.name: info for host, info in zip(nodes, captured)}

    def _nodes_up(self) -> int:
        argv = ["sinfo", "--noheader", "--format", "%D %a"]
        if self.settings.partition:
            argv += ["--partition", self.settings.partition]
        listed = self.controller.run(argv, timeout=QUICK_S)
        up = [line.split() for line in listed.output.splitlines() if len(line.split()) == 2]
        nodes = sum(int(count) for count, avail in up if count.isdigit() and avail == "up")
        if not listed.ok or nodes == 0:
            where = f"partition {self.settings.partition}" if self.settings.partition else "the default partition"
            raise UserError(f"{where} has no node that is up: {listed.output.strip()[-300:] or 'sinfo listed none'}",
                            file=self.inventory.source, field="cluster.slurm.partition")
        return nodes

    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        self._monitors.start(plan, dest, lambda host: SrunTransport(self._job(plan), host.name))

    def stop_monitors(self) -> None:
        self._monitors.stop()

    def close(self) -> None:
        self.stop_monitors()
        self._transports.clear()

    @staticmethod
    def slurm(plan: RunPlan) -> SlurmRequest:
        if not isinstance(plan.request, SlurmRequest):
            raise TypeError(f"a plan for another backend: {type(plan.request).__name__}")
        return plan.request

    def _scontrol(self, *args: str) -> CommandResult:
        return self.controller.run(["scontrol", *args], timeout=QUICK_S)

    # -- plan, preflight, allocation ----------------------------------------------------
    def refuse_if_held(self, job: Job, warn: Callable[[str], None]) -> None:
        return None  # the allocation is --exclusive: Slurm keeps other jobs off these nodes

    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        image = None if self.settings.container == "bare" else plan_job_image(job, inventory, vendor)
        request = slurm_request(self.settings, job, inventory, vendor, image)
        hosts = [node_host(self.settings, f"slurm-node{k}", "allocated-by-slurm") for k in range(job.nnodes)]
        notes = [note for note in check_hosts(job, inventory, hosts) if "local host" not in note]
        first = "<the first allocated node>"
        secret_env = container_env(job, inventory, vendor)[1]
        nodes = [NodePlan(host=host, node_rank=k, container_name=container_name(job, k),
                          labels=node_labels(job, host, k), host_run_dir=f"{request.run_root}/node{k}",
                          train_argv=train_argv(job, vendor, k, first, inventory.cluster.master_port,
                                                with_data=not job.synthetic),
                          secret_env=secret_env)
                 for k, host in enumerate(hosts)]
        return RunPlan(job=job, vendor=vendor, image=image, nodes=nodes, master_addr=first,
                       master_port=inventory.cluster.master_port, request=request,
                       inventory_source=inventory.source, notes=notes)

    def preflight(self, plan: RunPlan, clean_orphans: bool = False) -> PreflightReport:
        report = PreflightReport()
        version = self.controller.run(["sinfo", "--version"], timeout=QUICK_S)
        if not version.ok:
            raise UserError(f"the Slurm client does not answer here: {version.output.strip()[-300:]}",
                            file=self.inventory.source, field="cluster.backend")
        nodes = self._nodes_up()
        where = f"partition {self.settings.partition}" if self.settings.partition else "the default partition"
        if plan.job.nnodes > nodes:
            raise UserError(f"the job needs {plan.job.nnodes} nodes; {where} has {nodes}",
                            file=self.inventory.source, field="cluster.slurm.partition")
        root = Path(self.slurm(plan).run_root)
        try:
            root.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise UserError(f"cannot create the run folder {root}: {exc.strerror or exc}",
                            file=self.inventory.source, field="cluster.slurm.work_dir") from exc
        request = self.slurm(plan)
        (root / BATCH_SCRIPT).write_text(request.batch_script, encoding="utf-8")
        (root / STEP_SCRIPT).write_text(request.step_script, encoding="utf-8")
        # Slurm's own verdict on the request (partition, node count, limits), submitting nothing.
        trial = self.controller.run([request.sbatch_argv[0], "--test-only", *request.sbatch_argv[1:]],
                                    timeout=QUICK_S)
        if not trial.ok:
            shutil.rmtree(root, ignore_errors=True)
            raise UserError(f"Slurm refuses the job: {trial.output.strip()[-400:]}",
                            file=self.inventory.source, field="cluster.slurm")
        report.facts["controller"] = {"slurm": version.output.strip(), "nodes_up": str(nodes),
                                      "sbatch_test_only": trial.output.strip()[-200:]}
        return report

    def allocate(self, plan: RunPlan) -> RunPlan:
        request = self.slurm(plan)
        submitted = self.controller.run(request.sbatch_argv, timeout=QUICK_S)
        job_id = submitted.output.strip().splitlines()[-1].split(";")[0] if submitted.ok and submitted.output else ""
        if not job_id.isdigit():
            raise RunFailed(f"sbatch failed: {submitted.output.strip()[-500:]}")
        try:
            bound = self._bind(plan, job_id, self._wait_running(job_id))
            for _facts, _warnings in run_all(lambda node: self.node_payload.check(self._on(bound, node.host), bound,
                                                                                  node), bound.nodes):
                pass  # a node that cannot take the job raises, naming it
            # cluster.fabric type ib: the allocated nodes' HCAs, ports, rates, RDMA devices and memlock.
            check_inventory_fabric(self.inventory, [(n.host.name, self._on(bound, n.host)) for n in bound.nodes])
        except BaseException:
            self._cancel(job_id)
            raise
        return bound

    def _wait_running(self, job_id: str) -> dict[str, str]:
        deadline = time.monotonic() + self.settings.allocation_timeout_s
        while True:
            fields = job_fields(self._scontrol("show", "job", "-o", job_id).output)
            state = fields.get("JobState", "")
            if state == "RUNNING":
                return fields
            if state and state not in _ACTIVE:
                raise RunFailed(f"Slurm job {job_id} ended before it ran: {state} ({fields.get('Reason', '')})")
            if time.monotonic() > deadline:
                raise RunFailed(f"Slurm job {job_id} still {state or 'unknown'} after "
                                f"{self.settings.allocation_timeout_s:.0f} s ({fields.get('Reason', '')})")
            time.sleep(0.5)

    def _bind(self, plan: RunPlan, job_id: str, fields: dict[str, str]) -> RunPlan:
        names = self._scontrol("show", "hostnames", fields.get("NodeList", "")).output.split()
        if len(names) != plan.job.nnodes:
            raise RunFailed(f"Slurm job {job_id} got nodes {names}, expected {plan.job.nnodes}")

        def address(name: str) -> str:
            return job_fields(self._scontrol("show", "node", "-o", name).output).get("NodeAddr") or name

        hosts = [node_host(self.settings, name, addr) for name, addr in zip(names, run_all(address, names))]
        nodes = [dataclasses.replace(node, host=host, labels=node_labels(plan.job, host, node.node_rank))
                 for node, host in zip(plan.nodes, hosts)]
        allocation = f"Slurm job {job_id} on {', '.join(names)}"
        return dataclasses.replace(plan, nodes=nodes, master_addr=hosts[0].address, allocation=allocation,
                                   notes=[*plan.notes, allocation],
                                   request=dataclasses.replace(self.slurm(plan), job_id=job_id))

    def release(self, plan: RunPlan) -> None:
        if self.slurm(plan).job_id:  # a plan that allocate did not bind has no job (allocate cancelled its own)
            self._cancel(self.slurm(plan).job_id)

    def _cancel(self, job_id: str) -> None:
        """scancel unless Slurm says the job ended: a job whose state is not known
        (scontrol did not answer) is cancelled all the same, by its id."""
        if self._state(job_id)[0] in _ENDED:
            return
        cancelled = self.controller.run(["scancel", job_id], timeout=QUICK_S)
        if not cancelled.ok:
            raise RunFailed(f"scancel {job_id} failed: {cancelled.output.strip()[-300:]}; "
                            f"the allocation lives until its time limit unless cancelled by hand")

    def _state(self, job_id: str) -> tuple[str, dict[str, str]]:
        result = self._scontrol("show", "job", "-o", job_id)
        fields = job_fields(result.output) if result.ok else {}
        return fields.get("JobState", ""), fields

    # -- image and launch -----------------------------------------------------------------
    def prepare_image(self, plan: RunPlan) -> str:
        if self.settings.container == "bare":  # the training code into every node's run folder (shared)
            for node in plan.nodes:
                shutil.copytree(REPO_ROOT / "cases", Path(node.host_run_dir, "code", "cases"), dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            try:
                return python_environment(self._on(plan, plan.nodes[0].host), self.inventory.cluster.payload,
                                          plan.inventory_source)
            except HarnessError:  # nothing was launched: the code copied for it goes again
                for node in plan.nodes:
                    shutil.rmtree(node.host_run_dir, ignore_errors=True)
                raise
        if self.settings.container == "pyxis":
            return self.settings.container_image or image_of(plan).tag  # each task imports it
        entries = [DockerNode(node=node, docker=["docker"], run_argv=[],
                              image=image_commands(node.host, node.node_rank, image_of(plan), plan.job.run_id))
                   for node in plan.nodes]
        return docker_image.prepare_image(lambda entry: self._on(plan, entry.node.host), entries, image_of(plan))

    def launch(self, plan: RunPlan) -> None:
        for node in plan.nodes:
            run_dir = Path(node.host_run_dir)
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
            if node.secret_env:
                fd = os.open(run_dir / ENV_FILE_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(env_file_text(node.secret_env))
        Path(self.slurm(plan).run_root, GO_FILE).touch()

    # -- watching --------------------------------------------------------------------------
    def watch(self, plan: RunPlan, node_ranks: list[int]) -> NodeWatch:
        # The scheduler's word on each task (squeue/sacct), not the Docker backend's host streams.
        return PollingWatch(self, plan, node_ranks)

    def poll(self, plan: RunPlan, node_ranks: list[int]) -> list[NodeState]:
        job_id = self._job(plan)
        result = self._scontrol("show", "job", "-o", job_id)
        fields = job_fields(result.output) if result.ok else {}
        state = fields.get("JobState", "")
        states = []
        for node in plan.nodes_in(node_ranks):
            status_file = Path(node.host_run_dir, EXIT_STATUS)
            # COMPLETING hides why the job ends (scancel, a node failure, the time limit):
            # the final state follows within KillWait, and decides the kind.
            if status_file.is_file() and state != "COMPLETING":
                code = status_file.read_text().strip()
                # Stopped by Slurm (scancel, node failure, time limit): the scheduler's verdict, not the code's.
                states.append(NodeState(node.node_rank, "exited", int(code) if code.lstrip("-").isdigit() else 255,
                                        f"Slurm job {job_id} {state or 'gone'} ({fields.get('Reason', 'None')})",
                                        kind=_KINDS.get(state)))
            elif not result.ok and "Invalid job id" in result.output:
                states.append(NodeState(node.node_rank, "gone", detail=f"Slurm forgot job {job_id}"))
            elif not result.ok or state in _ACTIVE:
                states.append(NodeState(node.node_rank, "running" if result.ok else "unreachable",
                                        detail=state or result.output.strip()[-200:]))
            else:
                why = f"Slurm job {job_id} {state} (ExitCode {fields.get('ExitCode', '?')}, " \
                      f"{fields.get('Reason', 'None')}) before node {node.node_rank} reported its container's exit"
                states.append(NodeState(node.node_rank, "exited", None, why, kind=_KINDS.get(state, "infra")))
        return states

    def progress(self, plan: RunPlan, node_ranks: list[int]) -> dict[int, Event]:
        latest: dict[int, Event] = {}
        for node in plan.nodes_in(node_ranks):
            for path in sorted(Path(node.host_log_dir).glob("events_rank*.log")):
                for event in parse_lines(read_tail(path, 16 * 1024).splitlines()[-1:]):
                    latest[event.rank] = event
        return latest

    def dump_stacks(self, plan: RunPlan, node_ranks: list[int]) -> list[int]:
        if self.settings.container == "pyxis":
            return []
        nodes = plan.nodes_in(node_ranks)
        frozen = run_all(lambda node: self.node_payload.dump_stacks(self._on(plan, node.host), plan, node), nodes)
        return [node.node_rank for node, was in zip(nodes, frozen) if was]

    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        """scancel: every task stops its container and saves its logs (Slurm stops
        all nodes of a step together; the flow stops the rest of a failed job only)."""
        job_id = self.slurm(plan).job_id
        if not job_id or self._state(job_id)[0] not in _ACTIVE:
            return
        self.controller.run(["scancel", job_id], timeout=QUICK_S)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline and self._state(job_id)[0] in _ACTIVE:
            time.sleep(0.5)

    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        return read_tail(Path(plan.nodes[node_rank].host_run_dir, CONTAINER_LOG)).splitlines()[-lines:]

    # -- collect and clean up -------------------------------------------------------------
    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        secret_keys = {key for node in plan.nodes for key in node.secret_env}
        secret_values = {value for node in plan.nodes for value in node.secret_env.values()}
        job_id = self.slurm(plan).job_id
        batch_log = Path(self.slurm(plan).run_root, f"slurm-{job_id}.out")
        # The tasks report their exit before the batch script writes its own last line.
        deadline = time.monotonic() + BATCH_END_WAIT_S
        while job_id and time.monotonic() < deadline and self._state(job_id)[0] in _ACTIVE:
            time.sleep(0.2)
        if batch_log.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(batch_log, dest / "slurm.out")
        outcomes = [collect_run_dir(node.host.name, node.node_rank, node.container_name, Path(node.host_run_dir),
                                    dest / node.dir_name, secret_keys, secret_values)
                    for node in plan.nodes_in(node_ranks)]
        return outcomes

    def cleanup(self, plan: RunPlan, node_ranks: list[int], collected: set[int]) -> list[str]:
        """The tasks removed their containers; here only the run folders go, once collected."""
        kept = []
        for node in plan.nodes_in(node_ranks):
            if node.node_rank in collected:
                shutil.rmtree(node.host_run_dir, ignore_errors=True)
            else:
                kept.append(f"run folder {node.host_run_dir} kept (logs not fully collected)")
        root = Path(self.slurm(plan).run_root)
        if not kept and not any(root.glob("node[0-9]*")):
            shutil.rmtree(root, ignore_errors=True)
        if kept:
            raise RunFailed("; ".join(kept))
        return []

    def collect_again(self, run_id: str, hosts: list[Host], dest: Path) -> list[NodeOutcome]:
        outcomes = []
        for run_dir in sorted(Path(self.settings.work_dir, "runs", run_id).glob("node*")):
            rank = run_dir.name.removeprefix("node")
            if not rank.isdigit():
                continue
            host = labelled_host(run_dir) or f"slurm-node{rank}"
            outcome = collect_run_dir(host, int(rank), "", run_dir, dest / node_dir_name(host, int(rank)), set(), set())
            if outcome.collected:
                shutil.rmtree(run_dir, ignore_errors=True)
            outcomes.append(outcome)
        return outcomes

    def leftovers(self, hosts: list[Host], run_id: str | None = None) -> list[Leftover]:
        """The harness's Slurm jobs still queued or running (of one run, or of any)."""
        listed = self.controller.run(["squeue", "--noheader", "--format", "%i|%j|%T|%N"], timeout=QUICK_S)
        if not listed.ok:
            raise RunFailed(f"squeue failed: {listed.output.strip()[-300:]}")
        found = []
        for line in listed.output.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4 or not parts[1].startswith("bench-"):
                continue
            job_run = parts[1].removeprefix("bench-")
            if run_id is None or job_run == run_id:
                found.append(Leftover(host=parts[3] or "(pending)", container=parts[0], name=parts[1],
                                      run_id=job_run, state=parts[2].lower()))
        return found

    def remove(self, leftovers: list[Leftover]) -> list[str]:
        ids = [c.container for c in leftovers]
        if ids:
            self.controller.run(["scancel", *ids], timeout=QUICK_S)
        return ids
