"""What every backend that starts one container per node shares: the torchrun
argv, the container's name, labels, environment and `docker run` argv, and the
checks of the hosts a job was given.

Pure functions of (Job, Inventory, VendorSpec, ImagePlan): this is what the
dry-run prints and what the golden-file tests pin down. Secret variables
(harness/secrets.py) are the exception to "exact": their values are read when
the plan is made, kept in NodePlan.secret_env only, and reach the container
through an env file (NodePlan.env_file, `--env-file` in run_argv); the render
shows their keys with ***.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import CONTAINER_DATA_DIR, CONTAINER_LOG_DIR, ImagePlan
from harness.core.vendor import VendorSpec
from harness.errors import UserError
from harness.fabric.env import collective_env, unsupported_settings
from harness.fabric.model import docker_run_args
from harness.secrets import SecretEnv, is_secret_key, line_breaker

LABEL_PREFIX = "bench."
# In a node's run folder on its host, beside logs/ (never collected): the secret variables.
ENV_FILE_NAME = "secret.env"


def docker_cli(host: Host) -> list[str]:
    if host.docker_host:
        return ["env", f"DOCKER_HOST={host.docker_host}", "docker"]
    return ["docker"]


def container_name(job: Job, node_rank: int | str) -> str:
    return f"bench-{job.run_id}-{job.case}-n{node_rank}"


def node_labels(job: Job, host: Host, node_rank: int | str) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}run_id": job.run_id,
        f"{LABEL_PREFIX}case": job.case,
        f"{LABEL_PREFIX}vendor": job.vendor,
        f"{LABEL_PREFIX}config": job.config_name,
        f"{LABEL_PREFIX}node_rank": str(node_rank),
        f"{LABEL_PREFIX}host": host.name,
    }


def train_argv(job: Job, vendor: VendorSpec, node_rank: int | str, master_addr: str, master_port: int,
               with_data: bool, *, python: str | None = None, log_dir: str = CONTAINER_LOG_DIR,
               data_dir: str = CONTAINER_DATA_DIR) -> list[str]:
    """torchrun for one node; `python`, `log_dir` and `data_dir` as the node sees them
    (inside a container: the vendor image's python, /bench/logs, /bench/data)."""
    argv = [
        python or vendor.python, "-m", "cases.torchrun",  # torchrun, minus its interpreter teardown
        "--nnodes", str(job.nnodes),
        "--nproc_per_node", str(job.nproc_per_node),
        "--node_rank", str(node_rank),
        "--master_addr", master_addr,
        "--master_port", str(master_port),
        "--max_restarts", "0",
        # torchrun checks its workers this often (older torch defaults to 5 s): the lag between
        # the last worker's exit and the container's.
        "--monitor_interval", "0.1",
        "--log_dir", f"{log_dir}/torchrun",
        "--redirects", "3",
        "--tee", "3",
        "-m", "cases.run",
        "--case", job.case,
        "--vendor", job.vendor,
        "--config", job.hardware_config,
        "--log-dir", log_dir,
    ]
    if job.fix_hp:
        argv += ["--fix-hp", job.fix_hp]
    if job.seed is not None:
        argv += ["--seed", str(job.seed)]
    if with_data:
        argv += ["--data", data_dir]
    return argv


def container_env(job: Job, inventory: Inventory, vendor: VendorSpec) -> tuple[dict[str, str], SecretEnv]:
    """(the variables every container gets on its command line, the secret ones):
    the vendor's env, then the fabric's collective variables (harness/fabric/env.py:
    a fabric run's debug level wins over the vendor's), then cluster.env (from_env
    read now, UserError when unset; the user's explicit values win), then the
    visible-devices variable. A fabric the vendor's library cannot express is bad
    input. A variable is secret when it came from from_env or its key looks like a
    credential; a secret value must fit on an env file line."""
    fabric = inventory.cluster.fabric
    problems = unsupported_settings(fabric, vendor.collective, vendor.name)
    if problems:
        raise UserError("; ".join(problems), file=inventory.source, field="cluster.fabric")
    resolved, sources = inventory.resolve_env()
    env = {**vendor.env, **collective_env(fabric, vendor.collective), **resolved}
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
                    node_rank: int | str, run_dir: str, command: list[str], *, env: Mapping[str, str],
                    env_file: str | None) -> list[str]:
    """`env`: the visible variables (container_env); `env_file`: where the secret ones will be."""
    argv = [*docker_cli(host), "run", "--detach", "--name", container_name(job, node_rank)]
    for key, value in node_labels(job, host, node_rank).items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--net=host", "--ipc=host"]
    for ulimit in inventory.cluster.ulimits:
        argv += ["--ulimit", ulimit]
    argv += vendor.docker_run_args
    argv += fabric_run_args(inventory)
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


def _ulimit_name(value: str) -> str:
    return value.split("=", 1)[0].strip()


def fabric_run_args(inventory: Inventory) -> list[str]:
    """The fabric's `docker run` flags (harness/fabric/model.py), less a `--ulimit`
    that cluster.ulimits already sets to the same value; a different value for the
    same limit is bad input (docker would take one of the two silently)."""
    args = docker_run_args(inventory.cluster.fabric)
    mine = {_ulimit_name(u): u for u in inventory.cluster.ulimits}
    kept: list[str] = []
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "--ulimit" and _ulimit_name(value) in mine:
            if mine[_ulimit_name(value)].replace(" ", "") != value:
                raise UserError(
                    f"cluster.ulimits sets {mine[_ulimit_name(value)]} but fabric type "
                    f"{inventory.cluster.fabric.type} needs {value} (RDMA pins memory); "
                    f"drop the {_ulimit_name(value)} entry or set it to {value.split('=', 1)[1]}",
                    file=inventory.source, field="cluster.ulimits")
            continue
        kept += [flag, value]
    return kept


def check_hosts(job: Job, inventory: Inventory, hosts: list[Host]) -> list[str]:
    """Refuse hosts that cannot take the job (UserError); return notes for the plan."""
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
        return ["a multi-node run with a local host: every other host must reach its address"]
    return []


def node_run_dir(host: Host, job: Job, node_rank: int | str) -> str:
    return f"{host.work_dir}/runs/{job.run_id}/node{node_rank}"
