"""The Docker payload: one container per node, run by the docker CLI on its host
through the node's Transport. Every docker call is an argv list with a timeout,
so the dry run shows exactly what runs. Containers carry `bench.*` labels and
are found again by them.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.backends import docker_image
from harness.backends.docker_collect import collect_node
from harness.backends.docker_request import DockerNode, DockerRequest, docker_plan, image_of
from harness.backends.image import plan_job_image
from harness.backends.launch import ENV_FILE_NAME, LABEL_PREFIX, docker_cli
from harness.backends.marked import run_marked_batch
from harness.backends.node_checks import check_node
from harness.backends.payload import NodeCollected, Payload, TransportFor
from harness.backends.stream_watch import parse_answer, watch_argv, watch_script
from harness.backends.transport import Transport, remove_tree_argv
from harness.core.backend import Leftover, NodeState
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import NodePlan, RunPlan
from harness.core.vendor import VendorSpec
from harness.errors import HostUnreachable, UserError
from harness.hostinfo.model import EnvironmentInfo
from harness.hostinfo.probes import capture_environment
from harness.secrets import env_file_text, remove_file_argv, write_private_file_argv

QUICK_S = 30.0
CONTAINER_ID_RE = re.compile(r"[0-9a-f]{12,64}")
_LEFTOVER_FORMAT = '{{.ID}} {{.Names}} {{.Label "bench.run_id"}} {{.State}} {{.Label "bench.host"}}'

# The watch's view of a container (harness/backends/stream_watch.py): $1 its name, the rest the docker CLI.
_WATCH_FUNCTIONS = r"""
state() { c=$1; shift; $t "$@" inspect --format 'state={{.State.Status}} exit={{.State.ExitCode}}' "$c"; }
await() { c=$1; shift; "$@" wait "$c"; }
"""
WATCH_SCRIPT = watch_script(_WATCH_FUNCTIONS)
_RUNNING = ("created", "running", "restarting", "paused")
_NO_SUCH = ("No such object", "No such container")


def _no_such(output: str) -> bool:
    return any(word in output for word in _NO_SUCH)


def request_of(plan: RunPlan) -> DockerRequest:
    if not isinstance(plan.request, DockerRequest):
        raise TypeError(f"a plan for another payload: {type(plan.request).__name__}")
    return plan.request


def parse_docker_state(node_rank: int, text: str) -> NodeState:
    """A node's state from docker inspect's answer (or its error)."""
    return parse_answer(node_rank, text, _RUNNING, _NO_SUCH, "docker inspect")


class DockerPayload(Payload):
    name = "docker"

    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        return docker_plan(job, inventory, vendor, plan_job_image(job, inventory, vendor))

    def check(self, transport: Transport, plan: RunPlan, node: NodePlan) -> tuple[dict[str, str], list[str]]:
        docker = docker_cli(node.host)
        facts, warnings, answers = check_node(transport, plan, node, {
            "docker": [*docker, "version", "--format", "{{.Server.Version}}"],
            "same_name": [*docker, "ps", "-aq", "--filter", f"name=^{node.container_name}$"],
        })
        version = answers["docker"]
        if not version.ok:
            raise HostUnreachable(f"docker is not usable on {node.host.name}: {version.output.strip()[-300:]}",
                                  file=plan.inventory_source, field=f"hosts.{node.host.name}",
                                  host=node.host.name, code="BENCH-H05")
        facts["docker"] = version.output.strip().splitlines()[-1] if version.output.strip() else "unknown"
        if answers["same_name"].ok and CONTAINER_ID_RE.search(answers["same_name"].output):
            raise UserError(f"a container named {node.container_name} already exists on {node.host.name}",
                            field=f"hosts.{node.host.name}")
        return facts, warnings

    def capture(self, transport: Transport, host: Host, smi: str | None) -> EnvironmentInfo:
        # No framework probe on the host: the image carries the framework, and the
        # training processes report it.
        return capture_environment(transport, smi=smi, python=None, docker=docker_cli(host))

    def prepare(self, transport_for: TransportFor, plan: RunPlan) -> str:
        return docker_image.prepare_image(lambda entry: transport_for(entry.node.host), request_of(plan).nodes,
                                          image_of(plan))

    def launch(self, transport: Transport, plan: RunPlan, node: NodePlan) -> None:
        entry: DockerNode = request_of(plan).node(node.node_rank)
        if entry.env_file is None:
            transport.run(entry.run_argv, timeout=120).check()
            return
        # Secrets reach docker through a 0600 file that lives only until the container started.
        try:
            transport.run(write_private_file_argv(entry.env_file), timeout=QUICK_S,
                          stdin=env_file_text(node.secret_env).encode()).check()
            transport.run(entry.run_argv, timeout=120).check()
        finally:
            transport.run(remove_file_argv(entry.env_file), timeout=QUICK_S)

    def watch_argv(self, plan: RunPlan, node: NodePlan) -> list[str]:
        return watch_argv(WATCH_SCRIPT, plan.job.run_id, node, plan.job.nproc_per_node,
                          [node.container_name, *docker_cli(node.host)])

    def parse_state(self, node_rank: int, text: str) -> NodeState:
        return parse_docker_state(node_rank, text)

    def dump_stacks(self, transport: Transport, plan: RunPlan, node: NodePlan) -> bool:
        docker = docker_cli(node.host)
        # A frozen (paused) container cannot run anything: thaw it first. `unpause` succeeds
        # only on a paused container, so its status says whether the node was frozen.
        thawed = transport.run([*docker, "unpause", node.container_name], timeout=QUICK_S).ok
        # cases/stacks.py signals the training processes (not torchrun); each writes stacks_rank<r>.log.
        transport.run([*docker, "exec", node.container_name, plan.vendor.python, "-m", "cases.stacks"],
                      timeout=QUICK_S)
        return thawed

    def stop(self, transport: Transport, plan: RunPlan, node: NodePlan) -> None:
        # SIGTERM reaches torchrun, which forwards it to its workers; then SIGKILL.
        transport.run([*docker_cli(node.host), "stop", "--time", "10", node.container_name], timeout=60)

    def tail(self, transport: Transport, plan: RunPlan, node: NodePlan, lines: int) -> list[str]:
        result = transport.run([*docker_cli(node.host), "logs", "--tail", str(lines), node.container_name],
                               timeout=QUICK_S)
        return result.output.splitlines() if result.ok else []

    def collect(self, transport: Transport, node: NodePlan, folder: Path, secret_keys: set[str],
                secret_values: set[str]) -> NodeCollected:
        return collect_node(transport, docker_cli(node.host), node.container_name, node.host_log_dir, folder,
                            secret_keys, secret_values)

    def collect_again(self, transport: Transport, host: Host, run_dir: str, node_rank: int, run_id: str,
                      folder: Path) -> NodeCollected:
        names = [c.name for c in self.leftovers(transport, host, run_id)
                 if c.labelled_host in ("", host.name) and c.name.endswith(f"-n{node_rank}")]
        if names:
            got = collect_node(transport, docker_cli(host), names[0], f"{run_dir}/logs", folder, set(), set())
        else:  # the container is gone: only its log folder is left, and no exit status
            got = collect_node(transport, docker_cli(host), None, f"{run_dir}/logs", folder, set(), set())
        transport.run(remove_file_argv(f"{run_dir}/{ENV_FILE_NAME}"), timeout=QUICK_S)
        return got

    def remove_node(self, transport: Transport, plan: RunPlan, node: NodePlan,
                    run_dir: str | None) -> tuple[list[str], list[str]]:
        # By name, which holds the run id and node rank (launch.container_name): never another
        # node's container on an engine two hosts share. Container, secret file and run folder,
        # in this order, in one round trip.
        env_file = request_of(plan).node(node.node_rank).env_file
        steps: list[tuple[str, list[str]]] = [(f"container {node.container_name}",
                                               [*docker_cli(node.host), "rm", "--force", node.container_name])]
        if env_file is not None:  # a controller killed between writing and removing it
            steps.append((f"secret file {env_file}", remove_file_argv(env_file)))
        if run_dir is not None:
            steps.append((f"run folder {run_dir}", remove_tree_argv(run_dir)))
        answers = run_marked_batch(transport, [argv for _, argv in steps], timeout=120)
        container = answers[0]
        removed = [node.container_name] if container is not None and container.ok else []
        problems = []
        for (what, _), answer in zip(steps, answers):
            if answer is not None and (answer.ok or (answer is container and _no_such(answer.output))):
                continue  # done, or a container already gone (it never started, or `clean` removed it)
            problems.append(f"{what} not removed: {'no answer' if answer is None else answer.output.strip()[-200:]}")
        return removed, problems

    def leftovers(self, transport: Transport, host: Host, run_id: str | None) -> list[Leftover]:
        label = f"{LABEL_PREFIX}run_id" + (f"={run_id}" if run_id else "")
        result = transport.run([*docker_cli(host), "ps", "-a", "--filter", f"label={label}",
                                "--format", _LEFTOVER_FORMAT], timeout=QUICK_S)
        found = []
        for line in result.output.splitlines() if result.ok else []:
            parts = line.split()
            if len(parts) in (4, 5) and CONTAINER_ID_RE.fullmatch(parts[0]):
                found.append(Leftover(host.name, parts[0], parts[1], parts[2], parts[3],
                                      labelled_host=parts[4] if len(parts) == 5 else ""))
        return found

    def remove(self, transport: Transport, host: Host, leftovers: list[Leftover]) -> list[str]:
        ids = [c.container for c in leftovers]
        # Hosts may share one engine; a container already removed by the other is fine.
        transport.run([*docker_cli(host), "rm", "--force", *ids], timeout=120)
        return ids
