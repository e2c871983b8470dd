"""The job plan every backend returns and the runner, CLI, campaign and reports
read: one node per torchrun agent, with its host, log folder, labels and argv.

What a backend really runs (docker commands, an sbatch script) lives in its own
typed request (``RunPlan.request``); its ``describe()`` is the dry run's body and
the backend executes the very commands it describes, so the printed plan and
what runs cannot drift apart.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.inventory import Host
from harness.core.job import Job
from harness.core.vendor import VendorSpec
from harness.secrets import SecretEnv

CONTAINER_LOG_DIR = "/bench/logs"
CONTAINER_DATA_DIR = "/bench/data"


class BackendRequest(ABC):
    """What one backend will run for a plan, ready to execute."""

    @abstractmethod
    def describe(self) -> str:
        """Every command (or script) exactly as it will run, one block per node or step."""


@dataclass(frozen=True)
class ImagePlan:
    """A container image as planned (harness/backends/image.py renders and hashes it)."""

    vendor: str
    tag: str
    dockerfile: str
    params: dict[str, Any]
    # Build-context files: path inside the context -> source on the controller.
    context_files: dict[str, Path] = field(default_factory=dict)
    content_hash: str = ""


@dataclass(frozen=True)
class NodePlan:
    host: Host
    node_rank: int
    container_name: str  # the node's container: a Docker name, or an enroot container under pyxis
    labels: dict[str, str]
    host_run_dir: str  # {work_dir}/runs/{run_id}/node{k} on that host
    train_argv: list[str]  # torchrun inside the container
    # Secret variables: values in memory only (never in an argv, the render or any
    # file of the harness); the backend hands them to the container privately.
    secret_env: SecretEnv = field(default_factory=SecretEnv, repr=False, compare=False)

    @property
    def host_log_dir(self) -> str:
        return f"{self.host_run_dir}/logs"

    @property
    def dir_name(self) -> str:
        """The node's folder in the results: <host>_noderank<k>."""
        return node_dir_name(self.host.name, self.node_rank)


def node_dir_name(host: str, node_rank: int) -> str:
    return f"{host}_noderank{node_rank}"


@dataclass(frozen=True)
class RunPlan:
    job: Job
    vendor: VendorSpec
    image: ImagePlan | None  # None: the payload runs without an image (bare)
    nodes: list[NodePlan]
    master_addr: str
    master_port: int
    request: BackendRequest
    inventory_source: str = ""
    notes: list[str] = field(default_factory=list)
    # What a scheduler allocated (Slurm: its job id and nodes); empty for a host list.
    allocation: str = ""

    def nodes_in(self, node_ranks: list[int]) -> list[NodePlan]:
        wanted = set(node_ranks)
        return [node for node in self.nodes if node.node_rank in wanted]

    def render(self) -> str:
        """The dry run: the job, the image, then the backend's own request."""
        job = self.job
        lines = [
            f"run {job.run_id}: case={job.case} vendor={job.vendor} config={job.config_name} "
            f"({job.hardware_config}) fix_hp={job.fix_hp or '/'} "
            f"data={'synthetic' if job.synthetic else CONTAINER_DATA_DIR}",
            f"inventory: {self.inventory_source}",
        ]
        if self.image is not None:
            lines += [
                f"image: {self.image.tag}",
                f"  params: {', '.join(f'{k}={v!r}' for k, v in sorted(self.image.params.items()))}",
                "  Dockerfile:",
                *(f"    {line}" for line in self.image.dockerfile.rstrip("\n").splitlines()),
            ]
        lines.append(f"rendezvous: {self.master_addr}:{self.master_port}")
        text = "\n".join(lines) + "\n" + self.request.describe()
        return text + "".join(f"note: {note}\n" for note in self.notes)


def secret_line(secret_env: SecretEnv, how: str) -> list[str]:
    return [f"  secret env ({how}): {secret_env.describe()}"] if secret_env else []


def train_line(node: NodePlan) -> str:
    return f"  train: {shlex.join(node.train_argv)}"
