"""The backend for a list of hosts: how each is reached (its Transport: SSH, or
this machine's subprocesses) composed with what runs on it (a Payload: Docker
containers, or torchrun in a Python environment).

`cluster.backend: ssh` (or its old name `ssh-docker`) reaches the inventory's
hosts as each one says (`transport: ssh | local`); `cluster.backend: local` runs
on this machine only, with plain subprocesses. `cluster.payload.type` picks the
payload. The backend keeps connections and monitors; what a run learnt (which
nodes were collected) is returned to the runner, which passes it back.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.backends.fabric_checks import check_inventory_fabric
from harness.backends.monitors import Monitors
from harness.backends.payload import Payload, failed_outcome
from harness.backends.ssh import open_transport
from harness.backends.stream_watch import StreamWatch
from harness.backends.transport import Transport, remove_empty_dirs_argv, remove_tree_argv
from harness.core.backend import ClusterBackend, Leftover, NodeWatch, PreflightReport
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import NodePlan, RunPlan, node_dir_name
from harness.core.results import NodeOutcome
from harness.core.vendor import VendorSpec
from harness.errors import HarnessError, HostUnreachable, RunFailed, UserError
from harness.hostinfo.model import EnvironmentInfo
from harness.hostlock import DEFAULT_STALE_AFTER_S, refuse_if_locked
from harness.parallel import ResultT, run_all

QUICK_S = 30.0


class OrphansFound(UserError):
    """Workloads of other runs hold these hosts (a killed controller, or a live run)."""


class NodeBackend(ClusterBackend):
    def __init__(self, inventory: Inventory, payload: Payload) -> None:
        self.inventory = inventory
        self.payload = payload
        self._transports: dict[str, Transport] = {}
        self._transports_lock = threading.Lock()  # the lock check and the preflight run side by side
        self._monitors = Monitors()

    def transport(self, host: Host) -> Transport:
        with self._transports_lock:
            if host.name not in self._transports:
                self._transports[host.name] = open_transport(host, self.inventory.cluster)
            return self._transports[host.name]

    # -- plan and preflight -----------------------------------------------------------
    def refuse_if_held(self, job: Job, warn: Callable[[str], None]) -> None:
        refuse_if_locked(self.transport, self.inventory.select(job.nnodes), DEFAULT_STALE_AFTER_S, warn)

    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        # The job's inventory (a campaign job's own hosts, spares in place); the backend's own
        # when it lists none (the local backend's holds this machine when none was listed).
        return self.payload.plan(job, inventory if inventory.hosts else self.inventory, vendor)

    def preflight(self, plan: RunPlan, clean_orphans: bool = False) -> PreflightReport:
        try:
            return self._preflight(plan, clean_orphans)
        except HarnessError as exc:
            self._remove_empty_run_dirs(plan, exc)
            raise

    def _remove_empty_run_dirs(self, plan: RunPlan, refusal: HarnessError) -> None:
        """A refused run leaves nothing on its hosts: the folders the checks made go
        again where they stayed empty. A host never reached, or the one the refusal
        blames for not answering, is not asked (it had none made, or would not answer)."""
        blamed = refusal.host if isinstance(refusal, HostUnreachable) else None
        with self._transports_lock:
            reached = set(self._transports) - {blamed}
        first_rank: dict[str, int] = {}
        folders: dict[str, list[str]] = {}  # a host's nodes' folders, then their {work_dir}/runs/{run_id}
        for node in plan.nodes:
            if node.host.name in reached:
                first_rank.setdefault(node.host.name, node.node_rank)
                folders.setdefault(node.host.name, []).extend([node.host_log_dir, node.host_run_dir])
        for made in folders.values():
            made += sorted({folder.rsplit("/", 1)[0] for folder in made[1::2]})
        self._on_each(plan, list(first_rank.values()), lambda node: self.transport(node.host).run(
            remove_empty_dirs_argv(*folders[node.host.name]), timeout=QUICK_S))

    def _preflight(self, plan: RunPlan, clean_orphans: bool) -> PreflightReport:
        report = PreflightReport()
        # The orphan listing and the hosts' checks run side by side (one round trip
        # each); orphans are judged first: a killed run's workloads also hold the
        # master port and the devices, so the checks' verdict waits for theirs.
        with ThreadPoolExecutor(max_workers=1) as pool:
            listing = pool.submit(self.leftovers, [n.host for n in plan.nodes])
            checked: list[tuple[dict[str, str], list[str]]] | None = None
            check_error: HarnessError | None = None
            try:
                checked = run_all(lambda n: self.payload.check(self.transport(n.host), plan, n), plan.nodes)
            except HarnessError as exc:
                check_error = exc
            found = listing.result()
        orphans = [c for c in found if c.run_id != plan.job.run_id]
        if orphans and not clean_orphans:
            raise OrphansFound(
                f"{self.payload.name} workloads of other runs are on these hosts (a killed controller left them, or "
                "another run is live): " + "; ".join(c.describe() for c in orphans)
                + ". Check, then rerun with --clean-orphans to remove them, or `python -m harness clean --run-id RUN`",
                file=self.inventory.source, field="hosts")
        if orphans:
            removed = self.remove(orphans)
            report.warnings.append(f"removed {len(removed)} orphaned {self.payload.name} workload(s): "
                                   + "; ".join(c.describe() for c in orphans))
            # what they held is free now
            checked = run_all(lambda n: self.payload.check(self.transport(n.host), plan, n), plan.nodes)
            check_error = None
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

    # -- environment and monitors -----------------------------------------------------
    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        return self.capture_hosts([node.host for node in plan.nodes], plan.vendor.smi)

    def capture_hosts(self, hosts: list[Host], smi: str | None) -> dict[str, EnvironmentInfo]:
        captured = run_all(lambda host: self.payload.capture(self.transport(host), host, smi), hosts)
        return {host.name: info for host, info in zip(hosts, captured)}

    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        self._monitors.start(plan, dest, lambda host: open_transport(host, self.inventory.cluster))

    def stop_monitors(self) -> None:
        self._monitors.stop()

    # -- prepare and launch -----------------------------------------------------------
    def prepare_image(self, plan: RunPlan) -> str:
        return self.payload.prepare(self.transport, plan)

    def launch(self, plan: RunPlan) -> None:
        run_all(lambda node: self.payload.launch(self.transport(node.host), plan, node), plan.nodes)

    # -- watching ---------------------------------------------------------------------
    def watch(self, plan: RunPlan, node_ranks: list[int]) -> NodeWatch:
        return StreamWatch(plan.job.nproc_per_node,
                           [(node, self.transport(node.host), self.payload.watch_argv(plan, node))
                            for node in plan.nodes_in(node_ranks)],
                           self.payload.parse_state)

    def dump_stacks(self, plan: RunPlan, node_ranks: list[int]) -> list[int]:
        frozen = self._on_each(plan, node_ranks,
                               lambda node: self.payload.dump_stacks(self.transport(node.host), plan, node))
        return [node.node_rank for node, was in zip(plan.nodes_in(node_ranks), frozen) if was]

    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        self._on_each(plan, node_ranks, lambda node: self.payload.stop(self.transport(node.host), plan, node))

    def _on_each(self, plan: RunPlan, node_ranks: list[int],
                 action: Callable[[NodePlan], ResultT]) -> list[ResultT | None]:
        """What the action gave on each of these nodes, in their order; None where it failed.
        One host's failure (lost, engine error) must not stop the same action on the
        others; what failed is left for cleanup, which reports what stays."""
        def guarded(node: NodePlan) -> ResultT | None:
            try:
                return action(node)
            except HarnessError:
                return None

        return run_all(guarded, plan.nodes_in(node_ranks))

    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        node = plan.nodes[node_rank]
        return self.payload.tail(self.transport(node.host), plan, node, lines)

    # -- collect and clean up ---------------------------------------------------------
    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        secret_keys = {key for node in plan.nodes for key in node.secret_env}
        secret_values = {value for node in plan.nodes for value in node.secret_env.values()}

        def collect_one(node: NodePlan) -> NodeOutcome:
            folder = dest / node.dir_name
            try:
                got = self.payload.collect(self.transport(node.host), node, folder, secret_keys, secret_values)
            except (HarnessError, OSError) as exc:  # a lost host or a full disk costs only this node
                return failed_outcome(node.host.name, node.node_rank, node.container_name, folder,
                                      node.host_run_dir, exc)
            return NodeOutcome(host=node.host.name, node_rank=node.node_rank, container=node.container_name,
                               exit_code=got.exit_code, log_dir=str(folder), last_lines=got.last_lines,
                               collected=got.complete, remote_run_dir=node.host_run_dir, notes=got.notes)

        return run_all(collect_one, plan.nodes_in(node_ranks))

    def cleanup(self, plan: RunPlan, node_ranks: list[int], collected: set[int]) -> list[str]:
        failed: list[str] = []

        def clean(node: NodePlan) -> list[str]:
            # Only a run folder safely collected goes: otherwise `collect` must still find it.
            safe = node.node_rank in collected
            try:
                removed, problems = self.payload.remove_node(self.transport(node.host), plan, node,
                                                             node.host_run_dir if safe else None)
            except HarnessError as exc:
                failed.append(f"{node.host.name}: {self.payload.name} workload {node.container_name} and run folder "
                              f"{node.host_run_dir} left ({exc})")
                return []
            failed.extend(f"{node.host.name}: {problem}" for problem in problems)
            if not safe:
                failed.append(f"{node.host.name}: run folder {node.host_run_dir} kept (logs not fully collected)")
            return removed

        removed = [name for names in run_all(clean, plan.nodes_in(node_ranks)) for name in names]
        if failed:
            raise RunFailed("; ".join(failed))
        return removed

    def collect_again(self, run_id: str, hosts: list[Host], dest: Path) -> list[NodeOutcome]:
        def again(host: Host) -> list[NodeOutcome]:
            transport = self.transport(host)
            runs = f"{host.work_dir}/runs/{run_id}"
            listed = transport.run(["sh", "-c", 'for d in "$1"/node*; do [ -d "$d" ] && echo "@dir $d"; done; exit 0',
                                    "sh", runs], timeout=QUICK_S)
            outcomes = []
            for line in listed.output.splitlines():
                if not line.startswith("@dir "):  # a login shell's noise
                    continue
                run_dir = line.removeprefix("@dir ").strip()
                rank = run_dir.rsplit("node", 1)[-1]
                if not rank.isdigit():
                    continue
                folder = dest / node_dir_name(host.name, int(rank))
                try:
                    got = self.payload.collect_again(transport, host, run_dir, int(rank), run_id, folder)
                except (HarnessError, OSError) as exc:
                    outcomes.append(failed_outcome(host.name, int(rank), "", folder, run_dir, exc))
                    continue
                if got.complete:
                    transport.run(remove_tree_argv(run_dir), timeout=QUICK_S)
                outcomes.append(NodeOutcome(host=host.name, node_rank=int(rank), container="",
                                            exit_code=got.exit_code, log_dir=str(folder), last_lines=got.last_lines,
                                            collected=got.complete, remote_run_dir=run_dir, notes=got.notes))
            # Only this host's: on an engine two hosts share, the other host's container
            # may still be being collected by its own call beside this one.
            self.remove([c for c in self.payload.leftovers(transport, host, run_id)
                         if c.labelled_host in ("", host.name)])
            return outcomes

        return [outcome for found in run_all(again, hosts) for outcome in found]

    def leftovers(self, hosts: list[Host], run_id: str | None = None) -> list[Leftover]:
        try:
            listed = run_all(lambda host: self.payload.leftovers(self.transport(host), host, run_id), hosts)
        except HostUnreachable:
            raise  # names the host and the inventory field already
        except HarnessError as exc:
            raise RunFailed(f"cannot list the {self.payload.name} workloads: {exc}") from exc
        # Hosts may share one engine (or one machine): one entry per workload, and only those
        # labelled for one of these hosts (or unlabelled): another host's, say a Slurm node's
        # on the same engine, is neither an orphan here nor `clean`'s to remove.
        names = {"", *(host.name for host in hosts)}
        unique: dict[str, Leftover] = {}
        for found in listed:
            for leftover in found:
                if leftover.labelled_host in names:
                    unique.setdefault(leftover.container, leftover)
        return list(unique.values())

    def remove(self, leftovers: list[Leftover]) -> list[str]:
        by_host: dict[str, list[Leftover]] = {}
        for leftover in leftovers:
            by_host.setdefault(leftover.host, []).append(leftover)
        hosts = {host.name: host for host in self.inventory.hosts}

        def remove_on(host_name: str) -> list[str]:
            host = hosts[host_name]
            return self.payload.remove(self.transport(host), host, by_host[host_name])

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



# Payloads by `cluster.payload.type`, imported when used ("module:Class").
PAYLOADS: dict[str, str] = {
    "docker": "harness.backends.docker:DockerPayload",
    "bare": "harness.backends.bare:BarePayload",
}


def make_payload(inventory: Inventory, backend: str) -> Payload:
    spec = inventory.cluster.payload
    if spec.type not in PAYLOADS:
        raise UserError(f"payload {spec.type!r} runs under the slurm backend only; the {backend} backend runs "
                        f"{' or '.join(sorted(PAYLOADS))}", file=inventory.source, field="cluster.payload.type")
    module, _, attr = PAYLOADS[spec.type].partition(":")
    payload_class: Callable[[Inventory], Payload] = getattr(importlib.import_module(module), attr)
    return payload_class(inventory)


def ssh_backend(inventory: Inventory) -> NodeBackend:
    """The inventory's hosts, each reached as it says (`transport: ssh`, or `local` for this machine)."""
    if not inventory.hosts:
        raise UserError(f"the {inventory.cluster.backend} backend runs on the hosts listed here: expected at least "
                        "one host", file=inventory.source, field="hosts")
    return NodeBackend(inventory, make_payload(inventory, inventory.cluster.backend))


LOCAL_HOST = Host(name="localhost", address="127.0.0.1", transport="local")


def local_backend(inventory: Inventory) -> NodeBackend:
    """This machine only, through plain subprocesses (no SSH): the hosts listed must be
    `transport: local`; none listed is one host, `localhost`."""
    for index, host in enumerate(inventory.hosts):
        if host.transport != "local":
            raise UserError(f"the local backend runs on this machine only: host {host.name} has transport "
                            f"{host.transport}; expected local (or cluster.backend: ssh)",
                            file=inventory.source, field=f"hosts[{index}].transport")
    if not inventory.hosts:
        inventory = inventory.model_copy(update={"hosts": [LOCAL_HOST]})
    return NodeBackend(inventory, make_payload(inventory, "local"))
