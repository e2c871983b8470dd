"""The cluster backend seam: how a Job's containers get onto machines and how
their logs come back. SSH + Docker (harness/backends/docker.py) is the one we
have; a Slurm or Kubernetes backend implements the same methods and nothing in
parsing, metrics or reporting changes. The fixed flow around it is
harness/core/runner.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.image import ImagePlan
from harness.backends.launch import RunPlan
from harness.core.inventory import Inventory
from harness.core.job import Job
from harness.core.results import NodeOutcome
from harness.core.vendor import VendorSpec
from harness.hostinfo.environment import EnvironmentInfo


@dataclass(frozen=True)
class NodeState:
    node_rank: int
    running: bool
    exit_code: int | None  # None while running or when unknown
    detail: str = ""


@dataclass
class PreflightReport:
    warnings: list[str] = field(default_factory=list)
    # host name -> fact name -> value (docker version, clock skew, free disk, ...)
    facts: dict[str, dict[str, str]] = field(default_factory=dict)


class ClusterBackend(ABC):
    @abstractmethod
    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec, image: ImagePlan) -> RunPlan:
        """Everything that would be run, without touching any host (the dry run)."""

    @abstractmethod
    def preflight(self, plan: RunPlan) -> PreflightReport:
        """Check every host; raise a UserError subclass before anything starts."""

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

    @abstractmethod
    def poll(self, plan: RunPlan) -> list[NodeState]:
        """The state of every node's container."""

    @abstractmethod
    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        """Stop these nodes' containers (the rest of a failed job)."""

    @abstractmethod
    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        """The last lines of a node's output (progress, failure reports)."""

    @abstractmethod
    def collect(self, plan: RunPlan, dest: Path) -> list[NodeOutcome]:
        """Bring every node's logs back under dest/<host>_noderank<k>/."""

    @abstractmethod
    def cleanup(self, plan: RunPlan) -> list[str]:
        """Remove everything the run left on the hosts; return what was removed."""

    def close(self) -> None:
        return None
