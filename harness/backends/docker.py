"""The SSH + Docker backend: the docker CLI on every host, reached through a
Transport (paramiko, or a subprocess for a local host). Every docker call is an
argv list with a timeout, so the dry run shows exactly what runs.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import paramiko

from harness.backends.base import ClusterBackend, NodeState, PreflightReport
from harness.backends.image import ImagePlan, write_context
from harness.backends.launch import LABEL_PREFIX, NodePlan, RunPlan, docker_cli, plan_run
from harness.backends.ssh import open_transport
from harness.backends.transport import Transport
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.results import NodeOutcome
from harness.core.vendor import VendorSpec
from harness.devices.monitor import MonitorSampler
from harness.errors import (
    HarnessError,
    HostUnreachable,
    RemoteCommandError,
    RunFailed,
    UserError,
)
from harness.hostinfo.environment import EnvironmentInfo, capture_environment
from harness.parallel import run_all

QUICK_S = 30.0
BUILD_S = 3 * 3600.0
TRANSFER_S = 3600.0
MAX_CLOCK_SKEW_S = 2.0
MIN_FREE_DISK_GIB = 5.0
MONITOR_INTERVAL_S = 2.0
_CONTAINER_ID_RE = re.compile(r"[0-9a-f]{12,64}")
_IMAGE_ID_RE = re.compile(r"sha256:[0-9a-f]{64}")
_STATE_RE = re.compile(r"state=(\w+) exit=(-?\d+)")


def node_dir_name(node: NodePlan) -> str:
    return f"{node.host.name}_noderank{node.node_rank}"


class DockerSshBackend(ClusterBackend):
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._transports: dict[str, Transport] = {}
        self._monitors: list[MonitorSampler] = []

    def transport(self, host: Host) -> Transport:
        if host.name not in self._transports:
            self._transports[host.name] = open_transport(host, self.inventory.cluster)
        return self._transports[host.name]

    def _docker(self, node: NodePlan, args: list[str], timeout: float = QUICK_S) -> str:
        return self.transport(node.host).run([*node.docker, *args], timeout=timeout).check().output

    # -- plan -------------------------------------------------------------------------
    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec, image: ImagePlan) -> RunPlan:
        return plan_run(job, inventory, vendor, image)

    # -- preflight --------------------------------------------------------------------
    def preflight(self, plan: RunPlan) -> PreflightReport:
        report = PreflightReport()

        def check(node: NodePlan) -> tuple[dict[str, str], list[str]]:
            host = node.host
            field = f"hosts.{host.name}"
            transport = self.transport(host)
            before = time.time()
            clock = transport.run(["date", "+%s.%N"], timeout=QUICK_S)
            after = time.time()
            if not clock.ok:
                raise HostUnreachable(f"cannot run commands on {host.name}: {clock.output.strip()}",
                                      file=self.inventory.source, field=field)
            # The remaining checks are independent: one round trip for all of them.
            checks: dict[str, list[str]] = {
                "docker": [*node.docker, "version", "--format", "{{.Server.Version}}"],
                "mkdir": ["mkdir", "-p", "--", f"{node.host_run_dir}/logs"],
                "df": ["df", "-Pk", host.work_dir],
                "leftovers": [*node.docker, "ps", "-aq", "--filter", f"name=^{node.container_name}$"],
            }
            devices = plan.vendor.device_nodes(host.devices)
            if devices:
                checks["devices"] = ["ls", "-d", "--", *devices]
            if host.data_dir and not plan.job.synthetic:
                checks["data"] = ["test", "-d", host.data_dir]
            if node.node_rank == 0:
                # SO_REUSEADDR as torchrun's store sets it: a port in TIME_WAIT after
                # the previous run is free for it, a listening one is not.
                checks["port"] = ["python3", "-c", "import socket,sys; s=socket.socket(); "
                                  "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                                  "s.bind(('', int(sys.argv[1])))", str(plan.master_port)]
            done = dict(zip(checks, run_all(lambda argv: transport.run(argv, timeout=QUICK_S),
                                            list(checks.values()))))

            facts: dict[str, str] = {}
            warnings: list[str] = []
            try:
                skew = float(clock.output.split()[-1]) - (before + after) / 2
                facts["clock_skew_s"] = f"{skew:+.3f}"
                if abs(skew) > MAX_CLOCK_SKEW_S:
                    warnings.append(f"{host.name}: clock is {skew:+.1f} s off the controller's; "
                                    "cross-host timestamps will be skewed")
            except (ValueError, IndexError):
                facts["clock_skew_s"] = "unknown"
            version = done["docker"]
            if not version.ok:
                raise HostUnreachable(f"docker is not usable on {host.name}: {version.output.strip()[-300:]}",
                                      file=self.inventory.source, field=field)
            facts["docker"] = version.output.strip().splitlines()[-1] if version.output.strip() else "unknown"
            if not done["mkdir"].ok:
                raise HostUnreachable(f"cannot create {node.host_run_dir} on {host.name}: "
                                      f"{done['mkdir'].output.strip()}",
                                      file=self.inventory.source, field=f"{field}.work_dir")
            disk = done["df"]
            if disk.ok and len(disk.output.splitlines()) >= 2:
                free_gib = int(disk.output.splitlines()[-1].split()[3]) / 2**20
                facts["work_dir_free_gib"] = f"{free_gib:.1f}"
                if free_gib < MIN_FREE_DISK_GIB:
                    warnings.append(f"{host.name}: only {free_gib:.1f} GiB free in {host.work_dir}")
            if "devices" in done and not done["devices"].ok:
                missing = [d for d in devices if d not in done["devices"].output.split()]
                raise HostUnreachable(f"device(s) {', '.join(missing)} (vendor {plan.vendor.name}) missing on "
                                      f"{host.name}", file=self.inventory.source, field=f"{field}.devices")
            if "data" in done and not done["data"].ok:
                raise UserError(f"data directory {host.data_dir} does not exist on {host.name}",
                                file=self.inventory.source, field=f"{field}.data_dir")
            if done["leftovers"].ok and _CONTAINER_ID_RE.search(done["leftovers"].output):
                raise UserError(f"a container named {node.container_name} already exists on {host.name}",
                                field=field)
            port = done.get("port")
            if port is not None and port.exit_code == 1 and "Address already in use" in port.output:
                raise UserError(f"master port {plan.master_port} is already in use on {host.name}",
                                file=self.inventory.source, field="cluster.master_port")
            return facts, warnings

        for node, (facts, warnings) in zip(plan.nodes, run_all(check, plan.nodes)):
            report.facts[node.host.name] = facts
            report.warnings += warnings
        return report

    # -- environment and monitors -----------------------------------------------------
    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        return self.capture_hosts([node.host for node in plan.nodes], plan.vendor.smi)

    def capture_hosts(self, hosts: list[Host], smi: str | None) -> dict[str, EnvironmentInfo]:
        """Each host's environment, all hosts at once. No framework probe on the
        host: the image carries the framework, and the training processes report it."""
        def capture(host: Host) -> EnvironmentInfo:
            return capture_environment(self.transport(host), smi=smi, python=None)

        return {host.name: info for host, info in zip(hosts, run_all(capture, hosts))}

    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        # Monitors get their own connections so that a slow smi call never
        # holds up the poll loop's commands.
        for node in plan.nodes:
            transport = open_transport(node.host, self.inventory.cluster)
            sampler = MonitorSampler(transport, plan.vendor.smi, dest / node_dir_name(node) / "monitor.csv",
                                     interval_s=MONITOR_INTERVAL_S, system_power=True)
            sampler.start()
            self._monitors.append(sampler)

    def stop_monitors(self) -> None:
        def stop(sampler: MonitorSampler) -> None:
            sampler.stop()
            sampler.transport.close()

        run_all(stop, self._monitors)
        self._monitors.clear()

    # -- image ------------------------------------------------------------------------
    def _image_id(self, node: NodePlan, tag: str) -> str | None:
        result = self.transport(node.host).run(
            [*node.docker, "image", "inspect", "--format", "{{.Id}}", tag], timeout=QUICK_S)
        match = _IMAGE_ID_RE.search(result.output) if result.ok else None
        return match.group(0) if match else None

    def _build(self, node: NodePlan, image: ImagePlan) -> None:
        context_remote = f"{node.host.work_dir}/build/{image.content_hash[:16]}"
        with tempfile.TemporaryDirectory(prefix="bench-ctx-") as tmp:
            context = write_context(image, Path(tmp) / "context")
            self.transport(node.host).put_tree(context, context_remote)
        self._docker(node, ["build", "--tag", image.tag,
                            "--label", f"{LABEL_PREFIX}content_hash={image.content_hash}",
                            context_remote], timeout=BUILD_S)
        self.transport(node.host).run(["rm", "-rf", "--", context_remote], timeout=QUICK_S)

    def _copy_image(self, source: NodePlan, targets: list[NodePlan], tag: str) -> None:
        """docker save once on the source host, through the controller, docker load on every target."""
        name = tag.replace("/", "_").replace(":", "_")
        # A folder of its own per tag and node (hosts may share a disk): put_tree
        # replaces it whole, get_tree fetches only it.
        def folder(node: NodePlan) -> str:
            return f"{node.host.work_dir}/images/{name}-n{node.node_rank}"

        self.transport(source.host).run(["mkdir", "-p", folder(source)], timeout=QUICK_S).check()
        self._docker(source, ["save", "--output", f"{folder(source)}/image.tar", tag], timeout=TRANSFER_S)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-img-") as tmp:
                got = self.transport(source.host).get_tree(folder(source), Path(tmp))
                if [p.name for p in got] != ["image.tar"]:
                    raise RunFailed(f"docker save of {tag} on {source.host.name} produced no file")

                def load(target: NodePlan) -> None:
                    try:
                        self.transport(target.host).put_tree(Path(tmp), folder(target))
                        self._docker(target, ["load", "--input", f"{folder(target)}/image.tar"], timeout=TRANSFER_S)
                    finally:
                        self.transport(target.host).run(["rm", "-rf", "--", folder(target)], timeout=QUICK_S)

                run_all(load, targets)
        finally:
            self.transport(source.host).run(["rm", "-rf", "--", folder(source)], timeout=QUICK_S)

    def prepare_image(self, plan: RunPlan) -> str:
        tag = plan.image.tag
        first = plan.nodes[0]
        ids = run_all(lambda node: self._image_id(node, tag), plan.nodes)
        if ids[0] is None:
            self._build(first, plan.image)
            ids = run_all(lambda node: self._image_id(node, tag), plan.nodes)  # hosts may share an engine
        reference = ids[0]
        if reference is None:
            raise RunFailed(f"image {tag} is missing on {first.host.name} right after its build")
        lacking = [node for node, image_id in zip(plan.nodes, ids) if image_id != reference]
        if lacking:
            self._copy_image(first, lacking, tag)
            copied = run_all(lambda node: self._image_id(node, tag), lacking)
            differing = [n.host.name for n, i in zip(lacking, copied) if i != reference]
            if differing:
                raise RunFailed(f"image {tag} has a different id on {', '.join(differing)} than on "
                                f"{first.host.name} ({reference})")
        return reference

    # -- launch, poll, stop -----------------------------------------------------------
    def launch(self, plan: RunPlan) -> None:
        def start(node: NodePlan) -> None:
            self.transport(node.host).run(node.run_argv, timeout=120).check()

        run_all(start, plan.nodes)

    def poll(self, plan: RunPlan) -> list[NodeState]:
        def state(node: NodePlan) -> NodeState:
            result = self.transport(node.host).run(
                [*node.docker, "inspect", "--format", "state={{.State.Status}} exit={{.State.ExitCode}}",
                 node.container_name], timeout=QUICK_S)
            if not result.ok:
                return NodeState(node.node_rank, False, None, f"container not found: {result.output.strip()}")
            # Login shells may print their own lines around ours: find ours.
            match = _STATE_RE.search(result.output)
            if match is None:
                raise RemoteCommandError(node.host.name, result.argv, result.exit_code, result.output)
            status, code = match.group(1), match.group(2)
            running = status in ("created", "running", "restarting")
            return NodeState(node.node_rank, running, None if running else int(code), status)

        return run_all(state, plan.nodes)

    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        def stop_one(node: NodePlan) -> None:
            # SIGTERM reaches torchrun, which forwards it to its workers; then SIGKILL.
            self.transport(node.host).run([*node.docker, "stop", "--time", "10", node.container_name],
                                          timeout=60)

        run_all(stop_one, [n for n in plan.nodes if n.node_rank in node_ranks])

    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        node = plan.nodes[node_rank]
        result = self.transport(node.host).run(
            [*node.docker, "logs", "--tail", str(lines), node.container_name], timeout=QUICK_S)
        return result.output.splitlines() if result.ok else []

    # -- collect, cleanup -------------------------------------------------------------
    def collect(self, plan: RunPlan, dest: Path) -> list[NodeOutcome]:
        def collect_one(node: NodePlan) -> NodeOutcome:
            try:
                return collect_reachable(node)
            except (HarnessError, OSError, paramiko.SSHException) as exc:
                # A lost host must not cost the other nodes' logs.
                return NodeOutcome(host=node.host.name, node_rank=node.node_rank, container=node.container_name,
                                   exit_code=None, log_dir=str(dest / node_dir_name(node)),
                                   last_lines=[f"logs could not be collected: {exc}"])

        def collect_reachable(node: NodePlan) -> NodeOutcome:
            folder = dest / node_dir_name(node)
            folder.mkdir(parents=True, exist_ok=True)
            transport = self.transport(node.host)
            exit_code: int | None = None
            inspect, logs = run_all(lambda argv: transport.run(argv, timeout=300),
                                    [[*node.docker, "inspect", node.container_name],
                                     [*node.docker, "logs", node.container_name]])
            if inspect.ok:
                (folder / "container.json").write_text(inspect.output, encoding="utf-8")
                try:
                    state = json.loads(inspect.output)[0]["State"]
                    if not state.get("Running"):
                        exit_code = int(state["ExitCode"])
                except (ValueError, KeyError, IndexError):
                    pass
            container_log = logs.output if logs.ok else ""
            (folder / "container.log").write_text(container_log, encoding="utf-8")
            transport.get_tree(node.host_log_dir, folder)
            return NodeOutcome(
                host=node.host.name,
                node_rank=node.node_rank,
                container=node.container_name,
                exit_code=exit_code,
                log_dir=str(folder),
                last_lines=container_log.splitlines()[-30:],
            )

        return run_all(collect_one, plan.nodes)

    def cleanup(self, plan: RunPlan) -> list[str]:
        return remove_labelled(self, [n.host for n in plan.nodes], plan.job.run_id)

    def close(self) -> None:
        self.stop_monitors()
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()


def remove_labelled(backend: DockerSshBackend, hosts: list[Host], run_id: str | None) -> list[str]:
    """Remove every container carrying our labels (of one run, or of any run) on these hosts."""
    label = f"{LABEL_PREFIX}run_id" + (f"={run_id}" if run_id else "")

    def remove(host: Host) -> list[str]:
        transport = backend.transport(host)
        docker = docker_cli(host)
        listed = transport.run([*docker, "ps", "-aq", "--filter", f"label={label}"], timeout=QUICK_S)
        ids = [word for word in listed.output.split() if _CONTAINER_ID_RE.fullmatch(word)] if listed.ok else []
        if ids:
            # Hosts may share one engine; a container already removed by the other is fine.
            transport.run([*docker, "rm", "--force", *ids], timeout=120)
        return ids

    try:
        found = run_all(remove, hosts)
    except (HostUnreachable, RemoteCommandError) as exc:
        raise RunFailed(f"cleanup failed: {exc}") from exc
    return sorted({cid for ids in found for cid in ids})
