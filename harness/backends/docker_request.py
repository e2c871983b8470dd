"""The SSH + Docker backend's request: for each node, the docker commands that
make the image present (check, build on node 0, save/load to the others) and
start its container. harness/backends/docker.py and docker_image.py execute
exactly these argv lists; ``describe()`` prints them for the dry run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from harness.backends.launch import (
    ENV_FILE_NAME,
    LABEL_PREFIX,
    check_hosts,
    container_env,
    container_name,
    docker_cli,
    docker_run_argv,
    node_labels,
    node_run_dir,
    train_argv,
)
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import BackendRequest, ImagePlan, NodePlan, RunPlan, secret_line, train_line
from harness.core.vendor import VendorSpec


@dataclass(frozen=True)
class ImageCommands:
    """How the image gets onto one node's engine."""

    check: list[str]  # docker image inspect: its id, when the engine has it
    build: list[str]  # node 0 only, when it lacks the image; empty elsewhere
    build_context: str  # where the build context is copied on that host (node 0)
    image_folder: str  # where docker save writes / docker load reads the image tar
    save: list[str]  # node 0: docker save, when another node lacks the image
    load: list[str]  # docker load, on a node whose engine lacks the image


@dataclass(frozen=True)
class DockerNode:
    node: NodePlan
    docker: list[str]  # how to call the docker CLI on that host
    image: ImageCommands
    run_argv: list[str]  # docker run --detach ... image <train_argv>
    # {host_run_dir}/secret.env when there are secrets (`--env-file` in run_argv):
    # written (0600) right before `docker run`, removed right after.
    env_file: str | None = None

    def where(self) -> str:
        host = self.node.host
        return "local" if host.transport == "local" else f"ssh {host.user}@{host.address}:{host.port}"


@dataclass(frozen=True)
class DockerRequest(BackendRequest):
    nodes: list[DockerNode]

    def node(self, node_rank: int) -> DockerNode:
        return self.nodes[node_rank]

    def describe(self) -> str:
        lines: list[str] = []
        for entry in self.nodes:
            node, image = entry.node, entry.image
            lines += [f"node {node.node_rank}: {node.host.name} ({entry.where()})",
                      f"  image: {shlex.join(image.check)}"]
            if image.build:
                lines.append(f"    if absent, build it (context copied to {image.build_context}):")
                lines.append(f"      {shlex.join(image.build)}")
                lines.append("    if another node lacks it or holds another id, "
                             f"{shlex.join(image.save)}, copied through the controller")
            else:
                lines.append(f"    if absent or another id than node 0's: {shlex.join(image.load)}")
            lines.append(f"  run:   {shlex.join(entry.run_argv)}")
            lines += secret_line(node.secret_env, "in --env-file, 0600, removed once the container started")
            lines.append(train_line(node))
        return "\n".join(lines) + "\n"


def image_of(plan: RunPlan) -> ImagePlan:
    """The image a container payload's plan runs."""
    if plan.image is None:
        raise TypeError("a plan without an image (the bare payload's) has no container to run")
    return plan.image


def image_commands(host: Host, node_rank: int, image: ImagePlan, run_id: str) -> ImageCommands:
    docker = docker_cli(host)
    folder = f"{host.work_dir}/images/{image.tag.replace('/', '_').replace(':', '_')}-n{node_rank}"
    context = f"{host.work_dir}/build/{image.content_hash[:16]}-{run_id}"
    build = [*docker, "build", "--tag", image.tag, "--label", f"{LABEL_PREFIX}content_hash={image.content_hash}",
             context] if node_rank == 0 else []
    return ImageCommands(
        check=[*docker, "image", "inspect", "--format", "{{.Id}}", image.tag],
        build=build,
        build_context=context,
        image_folder=folder,
        save=[*docker, "save", "--output", f"{folder}/image.tar", image.tag],
        load=[*docker, "load", "--input", f"{folder}/image.tar"],
    )


def docker_plan(job: Job, inventory: Inventory, vendor: VendorSpec, image: ImagePlan) -> RunPlan:
    hosts = inventory.select(job.nnodes)
    notes = check_hosts(job, inventory, hosts)
    master = hosts[0]
    visible_env, secret_env = container_env(job, inventory, vendor)
    nodes: list[NodePlan] = []
    entries: list[DockerNode] = []
    for rank, host in enumerate(hosts):
        run_dir = node_run_dir(host, job, rank)
        command = train_argv(job, vendor, rank, master.address, inventory.cluster.master_port,
                             with_data=not job.synthetic)
        env_file = f"{run_dir}/{ENV_FILE_NAME}" if secret_env else None
        node = NodePlan(host=host, node_rank=rank, container_name=container_name(job, rank),
                        labels=node_labels(job, host, rank), host_run_dir=run_dir, train_argv=command,
                        secret_env=secret_env)
        nodes.append(node)
        entries.append(DockerNode(
            node=node, docker=docker_cli(host), image=image_commands(host, rank, image, job.run_id),
            run_argv=docker_run_argv(job, inventory, vendor, image, host, rank, run_dir, command,
                                     env=visible_env, env_file=env_file),
            env_file=env_file))
    return RunPlan(job=job, vendor=vendor, image=image, nodes=nodes, master_addr=master.address,
                   master_port=inventory.cluster.master_port, request=DockerRequest(entries),
                   inventory_source=inventory.source, notes=notes)
