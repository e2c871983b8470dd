"""Vendor specs: everything that differs between vendors, as data.

A vendor is a folder ``Dockerfiles/<vendor>/`` holding ``vendor.yaml`` (this
model) and a Jinja template of its Dockerfile. Nothing in harness/ branches on
a vendor's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness import REPO_ROOT
from harness.errors import UserError
from harness.yamlfile import load_model

DOCKERFILES_DIR = REPO_ROOT / "Dockerfiles"


class Mount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    readonly: bool = True


class VendorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    # Default accelerator name used to pick the case's hardware config
    # (cases/<case>/configs/<vendor>/<accelerator>x<nnodes>x<nproc>.yaml).
    accelerator: str
    template: str = "Dockerfile.j2"
    # Values the Dockerfile template is rendered with; the CLI may override them.
    template_params: dict[str, Any] = Field(default_factory=dict)
    # A vendor page's framework string (its 训练框架版本, e.g. "pytorch-1.8.0a0+52ea372")
    # -> the template_params that build an image with exactly that framework.
    # `bench --repro PAGE` looks the page's framework up here; explicit --param wins.
    framework_pins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The interpreter inside the image that runs torchrun and the cases.
    python: str = "python3"
    # Environment variable that selects the visible devices, if any.
    visible_devices_env: str | None = None
    # Extra `docker run` arguments: device flags, runtime, capabilities.
    docker_run_args: list[str] = Field(default_factory=list)
    # Device nodes passed with --device; "{index}" repeats a node for every
    # device the host has (hosts.yaml `devices`), e.g. /dev/xpu{index}.
    devices: list[str] = Field(default_factory=list)
    # Host paths the vendor's driver stack needs inside the container.
    mounts: list[Mount] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # Name of the monitor parser for the vendor's device tool (harness/monitor), or null.
    # The device itself and the torch.distributed backend are the training side's
    # business: cases/devices.py maps the vendor name to them.
    smi: str | None = None

    def device_nodes(self, device_count: int) -> list[str]:
        nodes: list[str] = []
        for pattern in self.devices:
            if "{index}" in pattern:
                nodes += [pattern.replace("{index}", str(i)) for i in range(device_count)]
            else:
                nodes.append(pattern)
        return nodes

    @property
    def folder(self) -> Path:
        return DOCKERFILES_DIR / self.name

    @property
    def template_path(self) -> Path:
        return self.folder / self.template


def available_vendors() -> list[str]:
    return sorted(p.parent.name for p in DOCKERFILES_DIR.glob("*/vendor.yaml"))


def load_vendor(name: str) -> VendorSpec:
    path = DOCKERFILES_DIR / name / "vendor.yaml"
    if not path.is_file():
        raise UserError(
            f"unknown vendor {name!r}; expected one of: {', '.join(available_vendors())}",
            field="VENDOR",
        )
    spec = load_model(path, VendorSpec, defaults={"name": name})
    if not spec.template_path.is_file():
        raise UserError(f"template {spec.template} not found", file=str(path), field="template")
    return spec


def vendors_pinning(framework: str) -> list[str]:
    """The vendors whose vendor.yaml pins this framework string (a page's 训练框架版本)."""
    return [name for name in available_vendors() if framework.strip() in load_vendor(name).framework_pins]
