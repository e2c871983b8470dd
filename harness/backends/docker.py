"""The SSH + Docker backend: the docker CLI on every host, reached through a
Transport (paramiko, or a subprocess for a local host). Every docker call is an
argv list with a timeout, so the dry run shows exactly what runs. Containers
carry `bench.*` labels and are found again by them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.backends import docker_image
from harness.backends.base import ClusterBackend, Leftover, NodeWatch, PreflightReport
from harness.backends.docker_checks import CONTAINER_ID_RE, check_host
from harness.backends.docker_collect import collect_node, failed_outcome
from harness.backends.docker_request import DockerNode, DockerRequest, docker_plan
from harness.backends.docker_watch import DockerWatch
from harness.backends.fabric_checks import check_inventory_fabric
from harness.backends.image import ImagePlan
from harness.backends.launch import ENV_FILE_NAME, LABEL_PREFIX, docker_cli
from harness.backends.ssh import open_transport
from harness.backends.transport import Transport
from harness.campaign.lock import DEFAULT_STALE_AFTER_S, refuse_if_locked
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import NodePlan, RunPlan, node_dir_name
from harness.core.results import NodeOutcome
from harness.core.vendor import VendorSpec
from harness.devices.sampler import MonitorSampler
from harness.errors import HarnessError, HostUnreachable, RunFailed, UserError
from harness.hostinfo.model import EnvironmentInfo
from harness.hostinfo.probes import capture_environment
from harness.parallel import run_all
from harness.secrets import env_file_text, remove_file_argv, write_private_file_argv

QUICK_S = 30.0
MONITOR_INTERVAL_S = 2.0
_LEFTOVER_FORMAT = '{{.ID}} {{.Names}} {{.Label "bench.run_id"}} {{.State}} {{.Label "bench.host"}}'


class OrphansFound(UserError):
    """Containers of other runs hold these hosts (a killed controller, or a live run)."""


class DockerSshBackend(ClusterBackend):
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._transports: dict[str, Transport] = {}
        self._monitors: list[MonitorSampler] = []
        self._collected: set[int] = set()  # node ranks whose logs are safely here

    def transport(self, host: Host) -> Transport:
        if host.name not in self._transports:
            self._transports[host.name] = open_transport(host, self.inventory.cluster)
        return self._transports[host.name]

    @staticmethod
    def request(plan: RunPlan) -> DockerRequest:
        if not isinstance(plan.request, DockerRequest):
            raise TypeError(f"a plan for another backend: {type(plan.request).__name__}")
        return plan.request

    # -- plan and preflight -----------------------------------------------------------
    def refuse_if_held(self, job: Job, warn: Callable[[str], None]) -> None:
        refuse_if_locked(self.transport, self.inventory.select(job.nnodes), DEFAULT_STALE_AFTER_S, warn)

    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec, image: ImagePlan) -> RunPlan:
        return docker_plan(job, inventory, vendor, image)

    def preflight(self, plan: RunPlan, clean_orphans: bool = False) -> PreflightReport:
        self._collected.clear()  # a new run (a campaign runs many through one backend)
        report = PreflightReport()
        # The orphan listing and the hosts' checks run side by side (one round trip
        # each); orphans are judged first: a killed run's containers also hold the
        # master port and the devices, so the checks' verdict waits for theirs.
        with ThreadPoolExecutor(max_workers=1) as pool:
            listing = pool.submit(self.leftovers, [n.host for n in plan.nodes])
            checked: list[tuple[dict[str, str], list[str]]] | None = None
            check_error: HarnessError | None = None
            try:
                checked = run_all(lambda n: self._check(plan, n), plan.nodes)
            except HarnessError as exc:
                check_error = exc
            found = listing.result()
        orphans = [c for c in found if c.run_id != plan.job.run_id]
        if orphans and not clean_orphans:
            raise OrphansFound(
                "containers of other runs are on these hosts (a killed controller left them, or another run "
                "is live): " + "; ".join(c.describe() for c in orphans)
                + ". Check, then rerun with --clean-orphans to remove them, or `python -m harness clean --run-id RUN`",
                file=self.inventory.source, field="hosts")
        if orphans:
            removed = self.remove(orphans)
            report.warnings.append(f"removed {len(removed)} orphaned container(s): "
                                   + "; ".join(c.describe() for c in orphans))
            checked, check_error = run_all(lambda n: self._check(plan, n), plan.nodes), None  # what they held is free
        if check_error is not None or checked is None:
            raise check_error or RunFailed("preflight checks gave no answer")
        for node, (facts, warnings) in zip(plan.nodes, checked):
            report.facts[node.host.name] = facts
            report.warnings += warnings
        # cluster.fabric type ib: HCAs, ports, rates, RDMA devices, memlock on every host (UserError: exit 2).
        fabric_facts = check_inventory_fabric(self.inventory, [(n.host.name, self.transport(n.host)) for n in plan.nodes])
        for host, facts in fabric_facts.items():
            report.facts.setdefault(host, {}).update(facts)
        return report

    def _check(self, plan: RunPlan, node: NodePlan) -> tuple[dict[str, str], list[str]]:
        return check_host(self.transport(node.host), plan, node, self.inventory.source)

    # -- environment and monitors -----------------------------------------------------
    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        return self.capture_hosts([node.host for node in plan.nodes], plan.vendor.smi)

    def capture_hosts(self, hosts: list[Host], smi: str | None) -> dict[str, EnvironmentInfo]:
        """Each host's environment, all hosts at once. No framework probe on the
        host: the image carries the framework, and the training processes report it."""
        def capture(host: Host) -> EnvironmentInfo:
            return capture_environment(self.transport(host), smi=smi, python=None, docker=docker_cli(host))

        return {host.name: info for host, info in zip(hosts, run_all(capture, hosts))}

    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        # Monitors get their own connections so that a slow smi call never
        # holds up the poll loop's commands.
        for node in plan.nodes:
            transport = self.monitor_transport(node.host)
            sampler = MonitorSampler(transport, plan.vendor.smi, dest / node.dir_name / "monitor.csv",
                                     interval_s=MONITOR_INTERVAL_S, system_power=True)
            sampler.start()
            self._monitors.append(sampler)

    def monitor_transport(self, host: Host) -> Transport:
        return open_transport(host, self.inventory.cluster)

    def stop_monitors(self) -> None:
        def stop(sampler: MonitorSampler) -> None:
            try:
                sampler.stop()
            except OSError:  # its file could not be flushed (a full disk): the samples are lost, nothing else
                pass
            finally:
                sampler.transport.close()

        run_all(stop, self._monitors)
        self._monitors.clear()

    # -- image and launch -------------------------------------------------------------
    def prepare_image(self, plan: RunPlan) -> str:
        return docker_image.prepare_image(lambda entry: self.transport(entry.node.host), self.request(plan).nodes,
                                          plan.image)

    def launch(self, plan: RunPlan) -> None:
        def start(entry: DockerNode) -> None:
            transport = self.transport(entry.node.host)
            if entry.env_file is None:
                transport.run(entry.run_argv, timeout=120).check()
                return
            # Secrets reach docker through a 0600 file that lives only until the container started.
            try:
                transport.run(write_private_file_argv(entry.env_file), timeout=QUICK_S,
                              stdin=env_file_text(entry.node.secret_env).encode()).check()
                transport.run(entry.run_argv, timeout=120).check()
            finally:
                transport.run(remove_file_argv(entry.env_file), timeout=QUICK_S)

        run_all(start, self.request(plan).nodes)

    # -- watching ---------------------------------------------------------------------
    def _nodes(self, plan: RunPlan, node_ranks: list[int]) -> list[NodePlan]:
        wanted = set(node_ranks)
        return [node for node in plan.nodes if node.node_rank in wanted]

    def watch(self, plan: RunPlan, node_ranks: list[int]) -> NodeWatch:
        return DockerWatch(plan.job.run_id, plan.job.nproc_per_node,
                           [(node, self.transport(node.host)) for node in self._nodes(plan, node_ranks)])

    def dump_stacks(self, plan: RunPlan, node_ranks: list[int]) -> None:
        def dump(node: NodePlan) -> None:
            transport = self.transport(node.host)
            # A frozen (paused) container cannot run anything: thaw it first.
            transport.run([*docker_cli(node.host), "unpause", node.container_name], timeout=QUICK_S)
            # cases/stacks.py signals the training processes (not torchrun); each writes stacks_rank<r>.log.
            transport.run([*docker_cli(node.host), "exec", node.container_name, plan.vendor.python, "-m", "cases.stacks"],
                          timeout=QUICK_S)

        run_all(_guarded(dump), self._nodes(plan, node_ranks))

    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        def stop_one(node: NodePlan) -> None:
            # SIGTERM reaches torchrun, which forwards it to its workers; then SIGKILL.
            self.transport(node.host).run([*docker_cli(node.host), "stop", "--time", "10", node.container_name], timeout=60)

        run_all(_guarded(stop_one), self._nodes(plan, node_ranks))

    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        node = plan.nodes[node_rank]
        result = self.transport(node.host).run(
            [*docker_cli(node.host), "logs", "--tail", str(lines), node.container_name], timeout=QUICK_S)
        return result.output.splitlines() if result.ok else []

    # -- collect and clean up ---------------------------------------------------------
    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        secret_keys = {key for node in plan.nodes for key in node.secret_env}
        secret_values = {value for node in plan.nodes for value in node.secret_env.values()}

        def collect_one(node: NodePlan) -> NodeOutcome:
            folder = dest / node.dir_name
            try:
                exit_code, complete, notes, last_lines = collect_node(
                    self.transport(node.host), docker_cli(node.host), node.container_name, node.host_log_dir, folder,
                    secret_keys, secret_values)
            except (HarnessError, OSError) as exc:  # a lost host or a full disk costs only this node
                return failed_outcome(node.host.name, node.node_rank, node.container_name, folder,
                                      node.host_run_dir, exc)
            if complete:
                self._collected.add(node.node_rank)
            return NodeOutcome(host=node.host.name, node_rank=node.node_rank, container=node.container_name,
                               exit_code=exit_code, log_dir=str(folder), last_lines=last_lines, collected=complete,
                               remote_run_dir=node.host_run_dir, notes=notes)

        return run_all(collect_one, self._nodes(plan, node_ranks))

    def cleanup(self, plan: RunPlan, node_ranks: list[int]) -> list[str]:
        nodes = self._nodes(plan, node_ranks)
        names = {node.container_name for node in nodes}  # not a lost node's, on an engine two hosts share
        removed = self.remove([c for c in self.leftovers([n.host for n in nodes], plan.job.run_id) if c.name in names])
        failed: list[str] = []

        request = self.request(plan)

        def remove_run_dir(node: NodePlan) -> None:
            env_file = request.node(node.node_rank).env_file
            if env_file is not None:  # a controller killed between writing and removing it
                self.transport(node.host).run(remove_file_argv(env_file), timeout=QUICK_S)
            # Only what is safely collected: otherwise `collect` must still find it.
            if node.node_rank not in self._collected:
                failed.append(f"{node.host.name}: run folder {node.host_run_dir} kept (logs not fully collected)")
                return
            result = self.transport(node.host).run(["rm", "-rf", "--", node.host_run_dir], timeout=QUICK_S)
            if not result.ok:
                failed.append(f"{node.host.name}: cannot remove {node.host_run_dir}: {result.output.strip()[-200:]}")

        run_all(_guarded(remove_run_dir), nodes)
        if failed:
            raise RunFailed("; ".join(failed))
        return removed

    def collect_again(self, run_id: str, hosts: list[Host], dest: Path) -> list[NodeOutcome]:
        def again(host: Host) -> list[NodeOutcome]:
            transport = self.transport(host)
            runs = f"{host.work_dir}/runs/{run_id}"
            listed = transport.run(["sh", "-c", 'for d in "$1"/node*; do [ -d "$d" ] && echo "$d"; done; exit 0',
                                    "sh", runs], timeout=QUICK_S)
            containers = {c.name: c for c in self.leftovers([host], run_id) if c.labelled_host in ("", host.name)}
            outcomes = []
            for run_dir in listed.output.split():
                rank = run_dir.rsplit("node", 1)[-1]
                if not rank.isdigit():
                    continue
                name = next((n for n in containers if n.endswith(f"-n{rank}")), "")
                folder = dest / node_dir_name(host.name, int(rank))
                try:
                    exit_code, complete, notes, last_lines = collect_node(
                        transport, docker_cli(host), name or "none", f"{run_dir}/logs", folder, set(), set())
                except (HarnessError, OSError) as exc:
                    outcomes.append(failed_outcome(host.name, int(rank), name, folder, run_dir, exc))
                    continue
                transport.run(remove_file_argv(f"{run_dir}/{ENV_FILE_NAME}"), timeout=QUICK_S)
                if complete:
                    transport.run(["rm", "-rf", "--", run_dir], timeout=QUICK_S)
                outcomes.append(NodeOutcome(host=host.name, node_rank=int(rank), container=name, exit_code=exit_code,
                                            log_dir=str(folder), last_lines=last_lines, collected=complete,
                                            remote_run_dir=run_dir, notes=notes))
            self.remove(list(containers.values()))
            return outcomes

        return [outcome for found in run_all(again, hosts) for outcome in found]

    def leftovers(self, hosts: list[Host], run_id: str | None = None) -> list[Leftover]:
        label = f"{LABEL_PREFIX}run_id" + (f"={run_id}" if run_id else "")

        def listing(host: Host) -> list[Leftover]:
            result = self.transport(host).run([*docker_cli(host), "ps", "-a", "--filter", f"label={label}",
                                               "--format", _LEFTOVER_FORMAT], timeout=QUICK_S)
            found = []
            for line in result.output.splitlines() if result.ok else []:
                parts = line.split()
                if len(parts) in (4, 5) and CONTAINER_ID_RE.fullmatch(parts[0]):
                    found.append(Leftover(host.name, parts[0], parts[1], parts[2], parts[3],
                                         labelled_host=parts[4] if len(parts) == 5 else ""))
            return found

        try:
            listed = run_all(listing, hosts)
        except HostUnreachable:
            raise  # names the host and the inventory field already
        except HarnessError as exc:
            raise RunFailed(f"cannot list containers: {exc}") from exc
        # Hosts may share one engine: one entry per container.
        unique: dict[str, Leftover] = {}
        for found in listed:
            for leftover in found:
                unique.setdefault(leftover.container, leftover)
        return list(unique.values())

    def remove(self, leftovers: list[Leftover]) -> list[str]:
        by_host: dict[str, list[Leftover]] = {}
        for leftover in leftovers:
            by_host.setdefault(leftover.host, []).append(leftover)
        hosts = {host.name: host for host in self.inventory.hosts}

        def remove_on(host_name: str) -> list[str]:
            host = hosts[host_name]
            ids = [c.container for c in by_host[host_name]]
            # Hosts may share one engine; a container already removed by the other is fine.
            self.transport(host).run([*docker_cli(host), "rm", "--force", *ids], timeout=120)
            return ids

        try:
            removed = run_all(remove_on, list(by_host))
        except HarnessError as exc:
            raise RunFailed(f"cleanup failed: {exc}") from exc
        return sorted(cid for ids in removed for cid in ids)

    def close(self) -> None:
        self.stop_monitors()
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()


def _guarded(action: Callable[[NodePlan], None]) -> Callable[[NodePlan], None]:
    """One host's failure (lost, engine error) must not stop the same action on the others."""
    def run(node: NodePlan) -> None:
        try:
            action(node)
        except HarnessError:
            pass

    return run
