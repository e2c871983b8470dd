"""The launch plan: for every node, the exact `docker run` and torchrun argv.

Pure functions of (Job, Inventory, VendorSpec, ImagePlan): this is what the
dry-run prints and what the golden-file tests pin down. Secret variables
(harness/secrets.py) are the exception to "exact": their values are read when
the plan is made, kept in NodePlan.secret_env only, and reach the container
through an env file (NodePlan.env_file, `--env-file` in run_argv); the render
shows their keys with ***.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.backends.image import ImagePlan
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.vendor import VendorSpec
from harness.errors import UserError
from harness.secrets import SecretEnv, is_secret_key, line_breaker

CONTAINER_LOG_DIR = "/bench/logs"
CONTAINER_DATA_DIR = "/bench/data"
LABEL_PREFIX = "bench."
# In a node's run folder on its host, beside logs/ (never collected): the secret variables.
ENV_FILE_NAME = "secret.env"


@dataclass(frozen=True)
class NodePlan:
    host: Host
    node_rank: int
    container_name: str
    labels: dict[str, str]
    host_run_dir: str  # {work_dir}/runs/{run_id}/node{k} on that host
    docker: list[str]  # how to call the docker CLI on that host
    run_argv: list[str]  # docker run ... image <train_argv>
    train_argv: list[str]  # torchrun inside the container
    # Secret variables: values in memory only (never in an argv, the render or any
    # file of the harness); the container gets them from env_file.
    secret_env: SecretEnv = field(default_factory=SecretEnv, repr=False, compare=False)
    # {host_run_dir}/secret.env on that host when there are secrets (`--env-file` in
    # run_argv): the backend writes it (0600) right before `docker run`, removes it right after.
    env_file: str | None = None

    @property
    def host_log_dir(self) -> str:
        return f"{self.host_run_dir}/logs"

    @property
    def dir_name(self) -> str:
        """The node's folder in the results: <host>_noderank<k>."""
        return f"{self.host.name}_noderank{self.node_rank}"


@dataclass(frozen=True)
class RunPlan:
    job: Job
    vendor: VendorSpec
    image: ImagePlan
    nodes: list[NodePlan]
    master_addr: str
    master_port: int
    inventory_source: str = ""
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Human-readable dry run: every command exactly as it would be run."""
        job = self.job
        lines = [
            f"run {job.run_id}: case={job.case} vendor={job.vendor} config={job.config_name} "
            f"({job.hardware_config}) fix_hp={job.fix_hp or '/'} "
            f"data={'synthetic' if job.synthetic else CONTAINER_DATA_DIR}",
            f"inventory: {self.inventory_source}",
            f"image: {self.image.tag}",
            f"  params: {', '.join(f'{k}={v!r}' for k, v in sorted(self.image.params.items()))}",
            "  Dockerfile:",
            *(f"    {line}" for line in self.image.dockerfile.rstrip("\n").splitlines()),
            f"rendezvous: {self.master_addr}:{self.master_port}",
        ]
        for node in self.nodes:
            host = node.host
            where = "local" if host.transport == "local" else f"ssh {host.user}@{host.address}:{host.port}"
            lines += [
                f"node {node.node_rank}: {host.name} ({where})",
                f"  build: {shlex.join([*node.docker, 'build', '-t', self.image.tag, '<context>'])}",
                f"  run:   {shlex.join(node.run_argv)}",
                *([f"  secret env (in --env-file, 0600, removed once the container started): "
                   f"{node.secret_env.describe()}"] if node.secret_env else []),
                f"  train: {shlex.join(node.train_argv)}",
            ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def docker_cli(host: Host) -> list[str]:
    if host.docker_host:
        return ["env", f"DOCKER_HOST={host.docker_host}", "docker"]
    return ["docker"]


def container_name(job: Job, node_rank: int) -> str:
    return f"bench-{job.run_id}-{job.case}-n{node_rank}"


def node_labels(job: Job, host: Host, node_rank: int) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}run_id": job.run_id,
        f"{LABEL_PREFIX}case": job.case,
        f"{LABEL_PREFIX}vendor": job.vendor,
        f"{LABEL_PREFIX}config": job.config_name,
        f"{LABEL_PREFIX}node_rank": str(node_rank),
        f"{LABEL_PREFIX}host": host.name,
    }


def train_argv(job: Job, vendor: VendorSpec, node_rank: int, master_addr: str, master_port: int,
               with_data: bool) -> list[str]:
    argv = [
        vendor.python, "-m", "torch.distributed.run",
        "--nnodes", str(job.nnodes),
        "--nproc_per_node", str(job.nproc_per_node),
        "--node_rank", str(node_rank),
        "--master_addr", master_addr,
        "--master_port", str(master_port),
        "--max_restarts", "0",
        # torchrun checks its workers this often (default 5 s): the lag between
        # the last worker's exit and the container's.
        "--monitor_interval", "0.5",
        "--log_dir", f"{CONTAINER_LOG_DIR}/torchrun",
        "--redirects", "3",
        "--tee", "3",
        "-m", "cases.run",
        "--case", job.case,
        "--vendor", job.vendor,
        "--config", job.hardware_config,
        "--log-dir", CONTAINER_LOG_DIR,
    ]
    if job.fix_hp:
        argv += ["--fix-hp", job.fix_hp]
    if with_data:
        argv += ["--data", CONTAINER_DATA_DIR]
    return argv


def container_env(job: Job, inventory: Inventory, vendor: VendorSpec) -> tuple[dict[str, str], SecretEnv]:
    """(the variables every container gets on its command line, the secret ones):
    the vendor's env, then cluster.env (from_env read now, UserError when unset),
    then the visible-devices variable. A variable is secret when it came from
    from_env or its key looks like a credential; a secret value must fit on an
    env file line."""
    resolved, sources = inventory.resolve_env()
    env = {**vendor.env, **resolved}
    if vendor.visible_devices_env:
        env[vendor.visible_devices_env] = ",".join(str(i) for i in range(job.nproc_per_node))
    secret_keys = sorted(k for k in env if k in sources or is_secret_key(k))
    for key in secret_keys:
        broken = line_breaker(env[key])
        if broken:
            from_vendor = key in vendor.env and key not in resolved
            raise UserError(
                f"the value of {key} holds {broken}; it is secret, so it goes through an env file, "
                "whose lines cannot hold one",
                file=str(vendor.folder / "vendor.yaml") if from_vendor else inventory.source,
                field=f"env.{key}" if from_vendor else f"cluster.env.{key}",
            )
    visible = {k: v for k, v in env.items() if k not in secret_keys}
    return visible, SecretEnv({k: env[k] for k in secret_keys}, sources)


def docker_run_argv(job: Job, inventory: Inventory, vendor: VendorSpec, image: ImagePlan, host: Host,
                    node_rank: int, run_dir: str, command: list[str], *, env: Mapping[str, str],
                    env_file: str | None) -> list[str]:
    """`env`: the visible variables (container_env); `env_file`: where the secret ones will be."""
    argv = [*docker_cli(host), "run", "--detach", "--name", container_name(job, node_rank)]
    for key, value in node_labels(job, host, node_rank).items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--net=host", "--ipc=host"]
    for ulimit in inventory.cluster.ulimits:
        argv += ["--ulimit", ulimit]
    argv += vendor.docker_run_args
    for device in vendor.device_nodes(host.devices):
        argv += ["--device", device]
    mounts = [*vendor.mounts, *inventory.cluster.mounts]
    for mount in mounts:
        argv += ["--volume", f"{mount.source}:{mount.target}:{'ro' if mount.readonly else 'rw'}"]
    argv += ["--volume", f"{run_dir}/logs:{CONTAINER_LOG_DIR}:rw"]
    if host.data_dir and not job.synthetic:
        argv += ["--volume", f"{host.data_dir}:{CONTAINER_DATA_DIR}:ro"]
    if env_file is not None:
        argv += ["--env-file", env_file]
    for key in sorted(env):
        argv += ["--env", f"{key}={env[key]}"]
    argv += ["--workdir", "/workspace", image.tag, *command]
    return argv


def plan_run(job: Job, inventory: Inventory, vendor: VendorSpec, image: ImagePlan) -> RunPlan:
    hosts = inventory.select(job.nnodes)
    notes: list[str] = []
    for host in hosts:
        if job.nproc_per_node > host.devices:
            raise UserError(
                f"config {job.config_name} needs {job.nproc_per_node} devices per node but host "
                f"{host.name} has devices: {host.devices}",
                file=inventory.source,
                field=f"hosts.{host.name}.devices",
            )
    if not job.synthetic:
        missing = [h.name for h in hosts if not h.data_dir]
        if missing:
            raise UserError(
                "a run on real data needs data_dir on every host; missing on " + ", ".join(missing),
                file=inventory.source,
                field=f"hosts.{missing[0]}.data_dir",
            )
    if job.nnodes > 1 and any(h.transport == "local" for h in hosts):
        notes.append("a multi-node run with a local host: every other host must reach its address")
    master = hosts[0]
    visible_env, secret_env = container_env(job, inventory, vendor)
    nodes = []
    for rank, host in enumerate(hosts):
        run_dir = f"{host.work_dir}/runs/{job.run_id}/node{rank}"
        command = train_argv(job, vendor, rank, master.address, inventory.cluster.master_port,
                             with_data=not job.synthetic)
        env_file = f"{run_dir}/{ENV_FILE_NAME}" if secret_env else None
        nodes.append(
            NodePlan(
                host=host,
                node_rank=rank,
                container_name=container_name(job, rank),
                labels=node_labels(job, host, rank),
                host_run_dir=run_dir,
                docker=docker_cli(host),
                run_argv=docker_run_argv(job, inventory, vendor, image, host, rank, run_dir, command,
                                         env=visible_env, env_file=env_file),
                train_argv=command,
                secret_env=secret_env,
                env_file=env_file,
            )
        )
    return RunPlan(
        job=job,
        vendor=vendor,
        image=image,
        nodes=nodes,
        master_addr=master.address,
        master_port=inventory.cluster.master_port,
        inventory_source=inventory.source,
        notes=notes,
    )
