"""What runs on a node, apart from how the node is reached.

A backend for a host list (harness/backends/nodes.py) is an access (how the
controller reaches each host: a Transport over SSH, or this machine's
subprocesses) composed with one Payload: Docker containers
(harness/backends/docker.py) or torchrun started directly in a Python
environment (harness/backends/bare.py). Every method acts on one node through
the transport it is handed, so a payload keeps no state of a run: what it
needs is in the plan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.transport import Transport
from harness.core.backend import Leftover, NodeState
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import NodePlan, RunPlan
from harness.core.results import NodeOutcome
from harness.core.vendor import VendorSpec
from harness.hostinfo.model import EnvironmentInfo

TransportFor = Callable[[Host], Transport]
NODE_LOG = "container.log"  # the node's output in its results folder (a container's, or torchrun's)
LAST_LINES = 30


@dataclass
class NodeCollected:
    """One node's logs, brought back by a payload."""

    exit_code: int | None
    complete: bool  # every file came back: the remote run folder may go
    notes: list[str] = field(default_factory=list)
    last_lines: list[str] = field(default_factory=list)


class Payload(ABC):
    """One node's workload: planned, checked, started, watched, stopped, collected, removed."""

    name: str

    def __init__(self, inventory: Inventory) -> None:
        self.spec = inventory.cluster.payload

    @abstractmethod
    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        """The plan and its request (every command, as the dry run prints it)."""

    @abstractmethod
    def check(self, transport: Transport, plan: RunPlan, node: NodePlan) -> tuple[dict[str, str], list[str]]:
        """(facts, warnings) of the node's host before anything starts; a UserError
        (or HostUnreachable) names what makes it unusable."""

    @abstractmethod
    def capture(self, transport: Transport, host: Host, smi: str | None) -> EnvironmentInfo:
        """The host's environment as this payload sees it."""

    @abstractmethod
    def prepare(self, transport_for: TransportFor, plan: RunPlan) -> str:
        """Make what the nodes run present on every node (an image, the training
        code); return what identifies it (an image id, a Python environment)."""

    @abstractmethod
    def launch(self, transport: Transport, plan: RunPlan, node: NodePlan) -> None:
        """Start the node's workload, detached; return once it started."""

    @abstractmethod
    def watch_argv(self, plan: RunPlan, node: NodePlan) -> list[str]:
        """The long-lived command that reports the node's state and its ranks' events
        (harness/backends/stream_watch.py)."""

    @abstractmethod
    def parse_state(self, node_rank: int, text: str) -> NodeState:
        """A node's state from one `@state` line of watch_argv's output."""

    @abstractmethod
    def dump_stacks(self, transport: Transport, plan: RunPlan, node: NodePlan) -> bool:
        """Ask the node's training processes to write their Python stacks; True when
        they were frozen (paused, stopped) and had to be thawed for it."""

    @abstractmethod
    def stop(self, transport: Transport, plan: RunPlan, node: NodePlan) -> None:
        """Stop the node's workload (SIGTERM to torchrun, then SIGKILL)."""

    @abstractmethod
    def tail(self, transport: Transport, plan: RunPlan, node: NodePlan, lines: int) -> list[str]:
        """The last lines of the node's output."""

    @abstractmethod
    def collect(self, transport: Transport, node: NodePlan, folder: Path, secret_keys: set[str],
                secret_values: set[str]) -> NodeCollected:
        """Bring the node's logs into `folder`."""

    @abstractmethod
    def collect_again(self, transport: Transport, host: Host, run_dir: str, node_rank: int, run_id: str,
                      folder: Path) -> NodeCollected:
        """Collect a node's run folder that a finished or abandoned run left."""

    @abstractmethod
    def remove_node(self, transport: Transport, plan: RunPlan, node: NodePlan,
                    run_dir: str | None) -> tuple[list[str], list[str]]:
        """Remove what the node's workload left besides its logs (a container, a process
        group, a secret file), then `run_dir` when given (its logs are collected):
        (what was removed, what could not be, as text)."""

    @abstractmethod
    def leftovers(self, transport: Transport, host: Host, run_id: str | None) -> list[Leftover]:
        """The harness's workloads on this host (of one run, or of any)."""

    @abstractmethod
    def remove(self, transport: Transport, host: Host, leftovers: list[Leftover]) -> list[str]:
        """Remove these workloads of this host; return the ids removed."""


def last_lines(path: Path, count: int = LAST_LINES) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=count)]
    except OSError:
        return []


def failed_outcome(host: str, node_rank: int, container: str, folder: Path, remote_run_dir: str,
                   exc: BaseException) -> NodeOutcome:
    return NodeOutcome(host=host, node_rank=node_rank, container=container, exit_code=None, log_dir=str(folder),
                       collected=False, remote_run_dir=remote_run_dir,
                       notes=[f"logs could not be collected: {exc}"],
                       last_lines=last_lines(folder / NODE_LOG))
