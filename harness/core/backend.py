"""The cluster backend seam: how a Job's containers get onto machines and how
their logs come back. SSH + Docker (harness/backends/docker.py) is the one we
have; a Slurm or Kubernetes backend implements the same methods and nothing in
parsing, metrics or reporting changes. The fixed flow around it is
harness/core/runner.py.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from harness.backends.transport import Transport
from harness.core.events import Event
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import RunPlan
from harness.core.results import FailureKind, NodeOutcome
from harness.core.vendor import VendorSpec
from harness.errors import UserError
from harness.hostinfo.model import EnvironmentInfo

# running: the container runs. exited: it finished (exit_code holds how).
# gone: the engine answered and has no such container. unreachable: the host or
# its engine did not answer this time (SSH down, engine frozen); not a verdict.
NodeStatus = Literal["running", "exited", "gone", "unreachable"]


@dataclass(frozen=True)
class NodeState:
    node_rank: int
    status: NodeStatus
    exit_code: int | None = None  # set when exited
    detail: str = ""
    # A scheduler's verdict on how the node ended (Slurm's NODE_FAIL is infra,
    # TIMEOUT is timeout); None: the exit code decides.
    kind: FailureKind | None = None
    # unreachable: since when (time.monotonic()) the host has said nothing, when
    # the backend knows; None: from when the watcher first saw it so.
    silent_since: float | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass
class PreflightReport:
    warnings: list[str] = field(default_factory=list)
    # host name -> fact name -> value (docker version, clock skew, free disk, ...)
    facts: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Leftover:
    """A container of the harness found on a host (by its labels)."""

    host: str
    container: str  # id
    name: str
    run_id: str
    state: str  # running, exited, created, paused, ...
    # The inventory host it was started for (its bench.host label). Hosts may
    # share one engine, so the host it was found on is not always its own.
    labelled_host: str = ""

    def describe(self) -> str:
        return f"{self.name} ({self.state}, run {self.run_id}) on {self.host}"


class NodeWatch(ABC):
    """What the watcher reads while a run goes on: every node's state and each
    rank's latest event. Reading is cheap (what is known now); `wait` returns when
    something changed or `timeout` passed."""

    @abstractmethod
    def states(self) -> list[NodeState]:
        """One state per watched node. Never raises for one host's trouble: that node is `unreachable`."""

    @abstractmethod
    def events(self, node_ranks: list[int]) -> dict[int, Event]:
        """Global rank -> its latest event, for the ranks of these nodes that could be read."""

    def notes(self) -> list[str]:
        """What happened to the watching itself since last asked (a stream reopened), for the log."""
        return []

    def wait(self, timeout: float) -> None:
        time.sleep(timeout)

    def close(self) -> None:
        return None

    def __enter__(self) -> NodeWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


PROGRESS_READ_S = 5.0  # a polling watch reads the ranks' event logs this often


class PollingWatch(NodeWatch):
    """A watch that asks the backend: poll() each time it is read for the states,
    progress() every PROGRESS_READ_S for the events (a scheduler's queue, a test's fake backend)."""

    def __init__(self, backend: ClusterBackend, plan: RunPlan, node_ranks: list[int]) -> None:
        self._backend = backend
        self._plan = plan
        self._node_ranks = node_ranks
        self._events: dict[int, Event] = {}
        self._next_read = time.monotonic() + PROGRESS_READ_S

    def states(self) -> list[NodeState]:
        asked = time.monotonic()  # a silent host's poll may block: its silence began before the answer
        return [replace(state, silent_since=asked) if state.status == "unreachable" and state.silent_since is None
                else state for state in self._backend.poll(self._plan, self._node_ranks)]

    def events(self, node_ranks: list[int]) -> dict[int, Event]:
        if time.monotonic() >= self._next_read:
            self._events.update(self._backend.progress(self._plan, node_ranks))
            self._next_read = time.monotonic() + PROGRESS_READ_S
        return dict(self._events)


class ClusterBackend(ABC):
    """One way of running a job's nodes. Chosen by name (harness/backends/registry.py)
    from the inventory's `cluster.backend`; the runner's fixed flow is
    plan -> preflight -> allocate -> environment / image -> launch -> poll ->
    stop / collect -> cleanup -> release."""

    # Whether the backend is handed the inventory's host list (ssh-docker) rather
    # than getting its nodes from a scheduler (slurm).
    uses_host_list = True

    @abstractmethod
    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        """Everything that would be run, without touching any host (the dry run)."""

    @abstractmethod
    def preflight(self, plan: RunPlan, clean_orphans: bool = False) -> PreflightReport:
        """Check every host; raise a UserError subclass before anything starts.
        Containers of other runs on these hosts are refused (OrphansFound) unless
        clean_orphans, which removes them."""

    def allocate(self, plan: RunPlan) -> RunPlan:
        """Get the nodes the plan runs on, when a scheduler hands them out; return the
        plan bound to them. The default: the plan's hosts are the nodes."""
        return plan

    def release(self, plan: RunPlan) -> None:
        """Give back what allocate got (always called once the run is over)."""
        return None

    def refuse_if_held(self, job: Job, warn: Callable[[str], None]) -> None:
        """Refuse (UserError) when a campaign holds the hosts the job would run on. A scheduler's
        backend has nothing to do: its allocation is the lock."""
        return None

    @abstractmethod
    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        """What each host runs (machine, accelerators, driver, OS, kernel, Docker), by host name."""

    @abstractmethod
    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        """Sample every host's devices (the vendor's tool) and CPU/memory into
        dest/<host>_noderank<k>/monitor.csv until stop_monitors."""

    @abstractmethod
    def stop_monitors(self) -> None: ...

    @abstractmethod
    def prepare_image(self, plan: RunPlan) -> str:
        """Make the image present on every host; return its id (the same everywhere)."""

    @abstractmethod
    def launch(self, plan: RunPlan) -> None:
        """Start one container per node."""

    def watch(self, plan: RunPlan, node_ranks: list[int]) -> NodeWatch:
        """Start watching these nodes until the watch is closed. The default asks
        poll() and progress() again and again; a backend that can listen to its
        hosts instead returns its own NodeWatch."""
        return PollingWatch(self, plan, node_ranks)

    def poll(self, plan: RunPlan, node_ranks: list[int]) -> list[NodeState]:
        """For the default watch: the state of these nodes now. Never raises for one
        host's trouble: that node is `unreachable` this time."""
        raise NotImplementedError(f"{type(self).__name__} has neither watch() nor poll()")

    def progress(self, plan: RunPlan, node_ranks: list[int]) -> dict[int, Event]:
        """For the default watch: global rank -> the last event its event log holds,
        for the ranks of these nodes that could be read (the stall watchdog's input)."""
        raise NotImplementedError(f"{type(self).__name__} has neither watch() nor progress()")

    @abstractmethod
    def dump_stacks(self, plan: RunPlan, node_ranks: list[int]) -> list[int]:
        """Ask every training process of these nodes to write its Python stacks
        into its logs (before a stalled run is stopped). Returns the nodes whose
        workload stood frozen (paused, stopped) and was thawed for it: a frozen
        rank waited for nobody, the others waited for it."""

    @abstractmethod
    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        """Stop these nodes' containers (the rest of a failed job)."""

    @abstractmethod
    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        """The last lines of a node's output (progress, failure reports)."""

    @abstractmethod
    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        """Bring these nodes' logs back under dest/<host>_noderank<k>/; one
        outcome per node, whatever failed (recorded in the outcome)."""

    @abstractmethod
    def cleanup(self, plan: RunPlan, node_ranks: list[int], collected: set[int]) -> list[str]:
        """Remove these nodes' workloads and, for the nodes whose logs were collected
        (`collected`: their node ranks), their remote run folders; return what was
        removed. Whatever stays on a host is raised (RunFailed naming it)."""

    @abstractmethod
    def collect_again(self, run_id: str, hosts: list[Host], dest: Path) -> list[NodeOutcome]:
        """Collect a finished or abandoned run's logs from the remote run folders
        it left (a host that was lost and is back), then remove its containers."""

    @abstractmethod
    def leftovers(self, hosts: list[Host], run_id: str | None = None) -> list[Leftover]:
        """The harness's containers on these hosts (of one run, or of any)."""

    @abstractmethod
    def remove(self, leftovers: list[Leftover]) -> list[str]:
        """Remove these containers; return the ids removed."""

    def transport(self, host: Host) -> Transport:
        """How to run a command on one of this backend's hosts (campaign gates and locks)."""
        raise UserError(f"{type(self).__name__} runs no command on a host outside a run")

    def capture_hosts(self, hosts: list[Host], smi: str | None) -> dict[str, EnvironmentInfo]:
        """Each host's environment as a run captures it (`env diff`, REPRO=), by host name."""
        raise UserError(f"{type(self).__name__} cannot capture hosts' environments outside a run")

    def forget(self) -> None:
        """Drop what is kept from run to run (a campaign's captured environments,
        images known present): a host that failed may have changed."""
        return None

    def close(self) -> None:
        return None
