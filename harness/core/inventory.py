"""hosts.yaml: the machines a job may run on, as a validated model.

Relative paths in the file (keys, known_hosts, mount sources, work dirs are
remote and so must be absolute) are resolved against the file's own folder.

A ``cluster.env`` value may be ``{from_env: NAME}``: read from the controller's
environment when the run is planned (``Inventory.resolve_env``), never stored
in the model or written anywhere; such values, and those of credential-like keys
(harness/secrets.py), reach the containers through an env file, not an argv.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, StringConstraints, field_validator, model_validator

from harness.core.vendor import Mount, template_value_problem
from harness.errors import UserError
from harness.expect.reference import PeakKey
from harness.fabric.model import Fabric
from harness.faults.settings import QuarantineSettings
from harness.secrets import ENV_KEY_RE
from harness.yamlfile import load_model


class Host(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    address: str
    transport: Literal["ssh", "local"] = "ssh"
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    key: str | None = None  # private key file; None: ssh-agent / default keys
    devices: int = Field(default=8, ge=1)
    work_dir: str = "/tmp/bench-work"
    # DOCKER_HOST for the docker CLI on that host; None: the CLI's default.
    docker_host: str | None = None
    data_dir: str | None = None  # dataset on that host, mounted read-only at /bench/data

    @field_validator("address")
    @classmethod
    def _address_is_host_or_ip(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise ValueError("expected a host name or an IP address")
        return value

    @field_validator("work_dir")
    @classmethod
    def _absolute_work_dir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected an absolute path on that host")
        return value.rstrip("/") or "/"


class FromEnv(BaseModel):
    """``{from_env: NAME}``: the value of the controller's variable NAME at planning time."""

    model_config = ConfigDict(extra="forbid")

    from_env: str = Field(pattern=ENV_KEY_RE.pattern)


def _env_value(value: Any) -> Any:
    """A string (numbers written as YAML numbers become text) or {from_env: NAME}.
    Refusals never quote a string value: an inline one may be a credential."""
    if isinstance(value, (str, FromEnv)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict):
        name = value.get("from_env")
        if set(value) == {"from_env"} and isinstance(name, str) and ENV_KEY_RE.match(name):
            return FromEnv(from_env=name)
        raise ValueError("expected {from_env: VARIABLE_NAME} (one key, a variable name)")
    raise ValueError("expected a string, or {from_env: VARIABLE_NAME} to read it from the controller's environment")


EnvKey = Annotated[str, StringConstraints(pattern=ENV_KEY_RE.pattern)]
EnvValue = Annotated[str | FromEnv, BeforeValidator(_env_value)]
TemplateValue = str | int | float | bool | list[str | int | float | bool]


class PayloadSpec(BaseModel):
    """What runs on every node (`cluster.payload`): a container per node (docker, or
    pyxis under Slurm), or torchrun started directly from a Python environment (bare)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["docker", "bare", "pyxis"] = "docker"
    # bare: the interpreter on every node (its torch runs the job).
    python: str = Field(default="python3", min_length=1)
    # bare: shell lines run on the node before torchrun (`module load cuda/12.4`, a venv's activate).
    setup: str = ""

    @field_validator("python")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if any(c.isspace() for c in value) or any(ord(c) < 32 for c in value):
            raise ValueError("expected one interpreter path or name, e.g. /opt/venv/bin/python")
        return value


class Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid")

    master_port: int = Field(default=29500, ge=1024, le=65535)
    known_hosts: str = "~/.ssh/known_hosts"
    # Adding a host key that known_hosts does not hold is an explicit choice.
    accept_unknown_host_keys: bool = False
    ssh_timeout_s: float = Field(default=15.0, gt=0)
    # A host's first connection keeps being tried this long (an sshd restarting) before it is unreachable.
    connect_window_s: float = Field(default=20.0, gt=0)
    # No progress event from a rank for this long stops the run as `stalled`
    # (--stall-timeout overrides it). The training side heartbeats while it
    # waits for data or evaluates, so only a real hang trips it.
    stall_timeout_s: float = Field(default=15 * 60.0, gt=0)
    # A host that answers nothing (SSH or its engine) for this long is lost.
    host_lost_s: float = Field(default=60.0, gt=0)
    # A rank whose compute p50 is below this share of the fastest rank's speed is
    # a straggler (--straggler-threshold overrides it); one whose data wait is
    # above input_bound_share of its step is input-bound (harness/core/attribution.py).
    straggler_threshold: float = Field(default=0.9, gt=0, le=1)
    input_bound_share: float = Field(default=0.2, gt=0, lt=1)
    # A device of the job whose median utilisation over the training window (its
    # tool's samples in monitor.csv) is below this share is a warning in the
    # results (harness/core/device_use.py); 0 turns the check off.
    min_device_util: float = Field(default=0.1, ge=0, le=1)
    # Variables of every container. {from_env: NAME} reads the controller's NAME at
    # planning time; credential-like keys and from_env values are secret (harness/secrets.py).
    env: dict[EnvKey, EnvValue] = Field(default_factory=dict)
    # `docker run --ulimit` values. Locked memory for RDMA registration and a deep
    # stack for data workers; a host whose hard memlock limit is lower (some
    # sandboxes) cannot start a container asking for more.
    ulimits: list[str] = Field(default_factory=lambda: ["memlock=-1:-1", "stack=67108864:67108864"])
    mounts: list[Mount] = Field(default_factory=list)
    template_params: dict[str, TemplateValue] = Field(default_factory=dict)
    # What the nodes talk over (harness/fabric/model.py): container flags, the
    # collective library's variables, the fabric preflight and the transport check.
    fabric: Fabric = Field(default_factory=Fabric)
    # Which backend runs the jobs (harness/backends/registry.py). Its own settings
    # sit under a key of its name (`slurm: {...}`) and are checked by that backend.
    backend: str = "ssh-docker"
    backend_settings: dict[str, Any] = Field(default_factory=dict)
    payload: PayloadSpec = Field(default_factory=PayloadSpec)
    # Dense peak TFLOPS per device of the site's own accelerator ({fp32: 1.5, bf16: 3.0}):
    # MFU divides by these before any reference/<accelerator>.yaml figure (harness/expect/).
    peak_tflops: dict[PeakKey, PositiveFloat] = Field(default_factory=dict)
    # A host's faults: the window of the "twice" rule and how long a quarantine lasts (harness/faults/).
    quarantine: QuarantineSettings = Field(default_factory=QuarantineSettings)

    @model_validator(mode="before")
    @classmethod
    def _backend_section(cls, data: Any) -> Any:
        if isinstance(data, dict):
            name = data.get("backend", "ssh-docker")
            if isinstance(name, str) and name in data and name not in cls.model_fields:
                data = {k: v for k, v in data.items() if k != name} | {"backend_settings": data[name] or {}}
        return data


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: Cluster = Field(default_factory=Cluster)
    # The machines, for a backend that is given them (ssh-docker); a scheduler's
    # backend (slurm) gets its nodes from the allocation and needs none.
    hosts: list[Host] = Field(default_factory=list)
    source: str = ""  # the file it was read from

    @model_validator(mode="after")
    def _unique_names(self) -> "Inventory":
        seen: set[str] = set()
        for host in self.hosts:
            if host.name in seen:
                raise ValueError(f"host name {host.name!r} appears twice")
            seen.add(host.name)
        return self

    def select(self, nnodes: int) -> list[Host]:
        """The first `nnodes` hosts: node rank = position in the file."""
        if not self.hosts:
            raise UserError("expected a list of hosts (name, address, devices, ...)", file=self.source, field="hosts")
        if nnodes > len(self.hosts):
            raise UserError(
                f"the job needs {nnodes} hosts but the inventory lists {len(self.hosts)}",
                file=self.source,
                field="hosts",
            )
        return self.hosts[:nnodes]

    def resolve_env(self, environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """(cluster.env with every from_env read from `environ` (default: the
        controller's environment), key -> the variable each such value came from).
        A variable that is not set is a UserError naming this file, the field and it."""
        environ = os.environ if environ is None else environ
        values: dict[str, str] = {}
        sources: dict[str, str] = {}
        for key, value in self.cluster.env.items():
            if isinstance(value, FromEnv):
                if value.from_env not in environ:
                    raise UserError(
                        f"environment variable {value.from_env} is not set on the controller "
                        f"(the value of {key} is read from it)",
                        file=self.source,
                        field=f"cluster.env.{key}",
                    )
                values[key], sources[key] = environ[value.from_env], value.from_env
            else:
                values[key] = value
        return values, sources


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def load_inventory(path: Path) -> Inventory:
    if not path.is_file():
        raise UserError("inventory file not found", file=str(path))
    inventory = load_model(path, Inventory)
    base = path.resolve().parent
    inventory.source = str(path)
    inventory.cluster.known_hosts = _resolve(base, inventory.cluster.known_hosts)
    for mount in inventory.cluster.mounts:
        mount.source = _resolve(base, mount.source)
    for host in inventory.hosts:
        if host.key is not None:
            host.key = _resolve(base, host.key)
    for key, value in inventory.cluster.template_params.items():
        # Types are checked against the vendor's defaults when the image is planned.
        problem = template_value_problem(key, value)
        if problem:
            raise UserError(problem, file=str(path), field=f"cluster.template_params.{key}")
    return inventory
