"""The Slurm backend's request: one `sbatch` allocation whose batch script waits
for the controller's go (the nodes' environment and image are prepared inside
the allocation), then starts one task per node. Each task runs the node's
container: `docker run` as the SSH backend does (stopped on SIGTERM, its logs
saved into the run folder, then removed), or pyxis's `srun --container-image`.

The scripts are rendered once, with `$SLURM_NODEID` where a node's rank goes,
and written as they are printed: ``describe()`` is the dry run and the files
sbatch runs. Logs live in `work_dir`, which the controller and every node share.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.backends.launch import (
    ENV_FILE_NAME,
    container_env,
    docker_run_argv,
    train_argv,
)
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import CONTAINER_DATA_DIR, CONTAINER_LOG_DIR, BackendRequest, ImagePlan
from harness.core.vendor import VendorSpec

# What the scripts leave in each node's run folder for the controller.
EXIT_STATUS = "exit_status"  # the container's exit code, written once its logs are saved
CONTAINER_LOG = "container.log"
CONTAINER_JSON = "container.json"
GO_FILE = "go"
BATCH_SCRIPT = "job.sbatch"
STEP_SCRIPT = "node_step.sh"
# Placeholders in argv that the scripts' shell expands on each node.
NODE_RANK = "${SLURM_NODEID}"
NODE_NAME = "${SLURMD_NODENAME}"
MASTER_ADDR = "${MASTER_ADDR}"
_SHELL_VARS = re.compile(r"(\$\{(?:SLURM_NODEID|SLURMD_NODENAME|MASTER_ADDR)\})")
# How long past the training timeout the allocation may live: preparing the
# nodes (environment, image build) happens inside it.
PREPARE_MARGIN_S = 3600.0


class SlurmSettings(BaseModel):
    """The inventory's `cluster.slurm` section."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None  # sbatch --time; default: the job's timeout plus an hour to prepare
    sbatch_args: list[str] = Field(default_factory=list)  # extra options, one argv word each
    # docker or pyxis: a container per node; bare (set by `cluster.payload: {type: bare}`): torchrun
    # from the payload's Python on each node.
    container: Literal["docker", "pyxis", "bare"] = "docker"
    # pyxis: the image the nodes import (`--container-image`), e.g. a registry reference.
    container_image: str | None = None
    gpus_per_node: bool = True  # ask --gpus-per-node <devices the job uses>; false on a cluster without GRES
    # Shared by the controller and every node at this path: scripts, logs, status files.
    work_dir: str
    devices: int = Field(default=8, ge=1)  # per node
    data_dir: str | None = None  # the dataset on every node
    allocation_timeout_s: float = Field(default=1800.0, gt=0)  # PENDING longer than this: infra failure
    # `docker stop --time` when a task is signalled: keep it under the cluster's
    # KillWait (default 30 s), or the task is killed before it saves the logs.
    stop_grace_s: int = Field(default=10, ge=1)

    @field_validator("work_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected an absolute path that the controller and every node share")
        return value.rstrip("/") or "/"


def shell_word(token: str) -> str:
    """shlex.quote, except that the scripts' own variables stay expandable."""
    pieces = [p for p in _SHELL_VARS.split(token) if p]
    return "".join(f'"{p}"' if _SHELL_VARS.fullmatch(p) else shlex.quote(p) for p in pieces) or "''"


def shell_join(argv: list[str]) -> str:
    return " ".join(shell_word(token) for token in argv)


def node_host(settings: SlurmSettings, name: str, address: str) -> Host:
    return Host(name=name, address=address, transport="local", devices=settings.devices,
                work_dir=settings.work_dir, data_dir=settings.data_dir)


def run_root(settings: SlurmSettings, job: Job) -> str:
    return f"{settings.work_dir}/runs/{job.run_id}"


def time_limit(settings: SlurmSettings, job: Job) -> str:
    if settings.time_limit:
        return settings.time_limit
    return str(math.ceil((job.timeout_s + PREPARE_MARGIN_S) / 60))  # minutes


@dataclass(frozen=True)
class SlurmRequest(BackendRequest):
    run_root: str
    sbatch_argv: list[str]  # ends with the batch script's path
    batch_script: str
    step_script: str
    secret_keys: list[str]
    job_id: str = ""  # set when the allocation runs (SlurmBackend.allocate binds it to the plan)

    @property
    def batch_path(self) -> str:
        return f"{self.run_root}/{BATCH_SCRIPT}"

    @property
    def step_path(self) -> str:
        return f"{self.run_root}/{STEP_SCRIPT}"

    def describe(self) -> str:
        lines = [f"submit: {shlex.join(self.sbatch_argv)}",
                 f"--- {self.batch_path}", self.batch_script.rstrip("\n"),
                 f"--- {self.step_path}", self.step_script.rstrip("\n"), "---"]
        if self.secret_keys:
            lines.append(f"secret env (node{{k}}/{ENV_FILE_NAME}, 0600, removed once the container started): "
                         + ", ".join(f"{key}=***" for key in self.secret_keys))
        return "\n".join(lines) + "\n"


def sbatch_argv(settings: SlurmSettings, job: Job, root: str) -> list[str]:
    argv = ["sbatch", "--parsable", "--job-name", f"bench-{job.run_id}",
            "--nodes", str(job.nnodes), "--ntasks-per-node", "1"]
    if settings.gpus_per_node:
        argv += ["--gpus-per-node", str(job.nproc_per_node)]
    argv += ["--exclusive", "--no-requeue", "--time", time_limit(settings, job)]
    if settings.partition:
        argv += ["--partition", settings.partition]
    if settings.account:
        argv += ["--account", settings.account]
    argv += ["--output", f"{root}/slurm-%j.out", *settings.sbatch_args, f"{root}/{BATCH_SCRIPT}"]
    return argv


def batch_script(job: Job, root: str) -> str:
    q = shlex.quote
    return f"""#!/bin/bash
# bench run {job.run_id}: {job.case} on {job.vendor} {job.config_name}, written by the harness.
# The controller prepares the allocated nodes (environment, image), then creates
# {GO_FILE} beside this script; the job then runs one task per node.
set -u
root={q(root)}
echo "bench run {job.run_id}: Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST; waiting for the controller's go"
until [ -e "$root/{GO_FILE}" ]; do sleep 1; done
first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$first" -o | tr ' ' '\\n' | sed -n 's/^NodeAddr=//p')
export MASTER_ADDR
echo "$(date -u +%FT%TZ) go: one task per node, rendezvous on $MASTER_ADDR"
srun --ntasks-per-node 1 --kill-on-bad-exit=1 bash "$root/{STEP_SCRIPT}"
code=$?
echo "$(date -u +%FT%TZ) the tasks ended: srun exit status $code"
exit "$code"
"""


def docker_step(job: Job, command: str, root: str, stop_grace_s: int) -> str:
    """The node's container under Docker: stopped on SIGTERM (scancel, a failed
    peer), its output and state saved into its run folder, then removed, so
    that no container outlives its task."""
    q = shlex.quote
    return f"""#!/bin/bash
# One node of bench run {job.run_id}: its container, from start to removal.
set -u
run_dir={q(root)}/node$SLURM_NODEID
name={q(f"bench-{job.run_id}-{job.case}-n")}$SLURM_NODEID
mkdir -p "$run_dir/logs"
finish() {{
    trap '' TERM INT
    docker stop --time {stop_grace_s} "$name" >/dev/null 2>&1
    [ -n "${{follow:-}}" ] && wait "$follow" 2>/dev/null
    docker inspect "$name" >"$run_dir/{CONTAINER_JSON}" 2>/dev/null
    code=$(docker inspect --format '{{{{.State.ExitCode}}}}' "$name" 2>/dev/null || echo "$1")
    docker rm --force "$name" >/dev/null 2>&1
    rm -f "$run_dir/{ENV_FILE_NAME}"
    echo "$code" >"$run_dir/{EXIT_STATUS}.tmp" && mv "$run_dir/{EXIT_STATUS}.tmp" "$run_dir/{EXIT_STATUS}"
    exit "$code"
}}
trap 'finish 143' TERM INT
{command} >/dev/null || finish 125
rm -f "$run_dir/{ENV_FILE_NAME}"
docker logs --follow "$name" >"$run_dir/{CONTAINER_LOG}" 2>&1 &
follow=$!
docker wait "$name" >/dev/null &
wait $!
finish 0
"""


def _task_script(job: Job, root: str, what: str, setup: str, env: dict[str, str], run: str) -> str:
    """A task's script around `run` (which sets $code): its run folder, the setup lines,
    the variables, the secret ones read as data from their 0600 file (then removed), and
    the exit status saved where the controller reads it."""
    q = shlex.quote
    exports = "".join(f"export {key}={q(value)}\n" for key, value in sorted(env.items()))
    return f"""#!/bin/bash
# One node of bench run {job.run_id}: {what}
set -u
run_dir={q(root)}/node$SLURM_NODEID
mkdir -p "$run_dir/logs"
{setup}{exports}if [ -f "$run_dir/{ENV_FILE_NAME}" ]; then  # the secret variables
    while IFS='=' read -r key value; do export "$key=$value"; done <"$run_dir/{ENV_FILE_NAME}"
    rm -f "$run_dir/{ENV_FILE_NAME}"
fi
{run}
echo "$code" >"$run_dir/{EXIT_STATUS}.tmp" && mv "$run_dir/{EXIT_STATUS}.tmp" "$run_dir/{EXIT_STATUS}"
exit "$code"
"""


def pyxis_step(job: Job, command: str, root: str, env: dict[str, str]) -> str:
    return _task_script(job, root, "a pyxis/enroot container that lives as long as this task.", "", env,
                        f'{command} >"$run_dir/{CONTAINER_LOG}" 2>&1\ncode=$?')


def bare_step(job: Job, train: list[str], root: str, env: dict[str, str], setup: str) -> str:
    """One node's torchrun from the site's Python, no container: the setup lines, then
    the run's BENCH_* marks beside the variables; SIGTERM is handed to torchrun."""
    q = shlex.quote
    prelude = "".join(f"{line}\n" for line in setup.strip().splitlines()) + (
        'cd "$run_dir/code" || exit 125\n'
        f'export BENCH_RUN_ID={q(job.run_id)} BENCH_NODE_RANK="$SLURM_NODEID" BENCH_HOST="$SLURMD_NODENAME"\n'
        'export PYTHONPATH="$run_dir/code${PYTHONPATH:+:$PYTHONPATH}"\n')
    run = (f'{shell_join(train)} >"$run_dir/{CONTAINER_LOG}" 2>&1 &\n'
           "child=$!\n"
           "trap 'kill -TERM \"$child\" 2>/dev/null' TERM INT\n"
           'while :; do wait "$child"; code=$?; kill -0 "$child" 2>/dev/null || break; done')
    return _task_script(job, root, "torchrun from the payload's Python, no container.", prelude, env, run)


def pyxis_command(settings: SlurmSettings, job: Job, inventory: Inventory, vendor: VendorSpec, image: ImagePlan,
                  train: list[str], root: str) -> str:
    """A step of one task on this task's own node, in the imported image; the
    variables come from the task's environment (--export ALL)."""
    mounts = [f"{m.source}:{m.target}:{'ro' if m.readonly else 'rw'}" for m in [*vendor.mounts, *inventory.cluster.mounts]]
    mounts.append(f"{root}/node{NODE_RANK}/logs:{CONTAINER_LOG_DIR}")
    if settings.data_dir and not job.synthetic:
        mounts.append(f"{settings.data_dir}:{CONTAINER_DATA_DIR}:ro")
    argv = ["srun", "--overlap", "--nodes", "1", "--ntasks", "1", "--nodelist", NODE_NAME, "--export", "ALL",
            "--container-image", settings.container_image or image.tag,
            "--container-name", f"bench-{job.run_id}-{job.case}-n{NODE_RANK}",
            "--container-mounts", ",".join(mounts), "--container-workdir", "/workspace", "--no-container-mount-home",
            *train]
    return shell_join(argv)


def slurm_request(settings: SlurmSettings, job: Job, inventory: Inventory, vendor: VendorSpec,
                  image: ImagePlan | None) -> SlurmRequest:
    root = run_root(settings, job)
    visible_env, secret_env = container_env(job, inventory, vendor)
    if settings.container == "bare" or image is None:
        payload = inventory.cluster.payload
        run_dir = f"{root}/node{NODE_RANK}"
        bare_train = train_argv(job, vendor, NODE_RANK, MASTER_ADDR, inventory.cluster.master_port,
                                with_data=not job.synthetic, python=payload.python, log_dir=f"{run_dir}/logs",
                                data_dir=settings.data_dir or "")
        return SlurmRequest(run_root=root, sbatch_argv=sbatch_argv(settings, job, root),
                            batch_script=batch_script(job, root),
                            step_script=bare_step(job, bare_train, root, visible_env, payload.setup),
                            secret_keys=sorted(secret_env))
    train = train_argv(job, vendor, NODE_RANK, MASTER_ADDR, inventory.cluster.master_port,
                       with_data=not job.synthetic)
    if settings.container == "pyxis":
        step = pyxis_step(job, pyxis_command(settings, job, inventory, vendor, image, train, root), root, visible_env)
    else:
        # Every node's container is this one with the task's own name and rank in place.
        template = node_host(settings, "node", "node").model_copy(update={"name": NODE_NAME})
        run_dir = f"{root}/node{NODE_RANK}"
        argv = docker_run_argv(job, inventory, vendor, image, template, NODE_RANK, run_dir, train,
                               env=visible_env, env_file=f"{run_dir}/{ENV_FILE_NAME}" if secret_env else None)
        step = docker_step(job, shell_join(argv), root, settings.stop_grace_s)
    return SlurmRequest(run_root=root, sbatch_argv=sbatch_argv(settings, job, root),
                        batch_script=batch_script(job, root), step_script=step,
                        secret_keys=sorted(secret_env))
