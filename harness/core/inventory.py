"""hosts.yaml: the machines a job may run on, as a validated model.

Relative paths in the file (keys, known_hosts, mount sources, work dirs are
remote and so must be absolute) are resolved against the file's own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.core.vendor import Mount
from harness.errors import UserError
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


class Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid")

    master_port: int = Field(default=29500, ge=1024, le=65535)
    known_hosts: str = "~/.ssh/known_hosts"
    # Adding a host key that known_hosts does not hold is an explicit choice.
    accept_unknown_host_keys: bool = False
    ssh_timeout_s: float = Field(default=15.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    # `docker run --ulimit` values. Locked memory for RDMA registration and a deep
    # stack for data workers; a host whose hard memlock limit is lower (some
    # sandboxes) cannot start a container asking for more.
    ulimits: list[str] = Field(default_factory=lambda: ["memlock=-1:-1", "stack=67108864:67108864"])
    mounts: list[Mount] = Field(default_factory=list)
    template_params: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: Cluster = Field(default_factory=Cluster)
    hosts: list[Host] = Field(min_length=1)
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
        if nnodes > len(self.hosts):
            raise UserError(
                f"the job needs {nnodes} hosts but the inventory lists {len(self.hosts)}",
                file=self.source,
                field="hosts",
            )
        return self.hosts[:nnodes]


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
    return inventory
