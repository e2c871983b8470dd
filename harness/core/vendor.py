"""Vendor specs: everything that differs between vendors, as data.

A vendor is a folder ``Dockerfiles/<vendor>/`` holding ``vendor.yaml`` (this
model) and a Jinja template of its Dockerfile. Nothing in harness/ branches on
a vendor's name.

Template parameters are checked before anything is rendered
(``template_value_problem``): a value must have the kind of the vendor's
default (a list stays a list: ``apt_packages=curl`` is refused, not read as
the letters c, u, r, l), and no string may hold a control character (a newline
in a Dockerfile line starts a new instruction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from harness import REPO_ROOT
from harness.errors import UserError
from harness.yamlfile import load_model

DOCKERFILES_DIR = REPO_ROOT / "Dockerfiles"

_NO_DEFAULT: Any = object()
_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL byte"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _control_problem(value: Any, where: str) -> str | None:
    """The first control character in any string of `value` (list items and
    mapping keys and values too), described; `where` names the value."""
    if isinstance(value, str):
        for char in value:
            if ord(char) < 32 or ord(char) == 127:
                name = _CONTROL_NAMES.get(char, f"the control character U+{ord(char):04X}")
                return f"{where} holds {name} ({value!r}); no template value may hold control characters"
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = _control_problem(item, f"{where}[{index}]")
            if problem:
                return problem
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _control_problem(key, f"a key of {where}") or _control_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
    return None


def template_value_problem(name: str, value: Any, default: Any = _NO_DEFAULT) -> str | None:
    """What is wrong with template parameter `name` = `value` when the vendor's
    default is `default` (none given: only control characters are checked); None
    when nothing is. The value must be of the default's kind: list, mapping,
    string, number or boolean; a list's items of the kind of the default's items
    (strings when the default is empty)."""
    problem = _control_problem(value, "the value")
    if problem:
        return problem
    if default is _NO_DEFAULT or default is None:
        return None
    expected, got = _kind(default), _kind(value)
    if expected == "list":
        if got != "list":
            return (f"expected a list (the vendor's default is {default!r}), got the {got} {value!r}; write a list: "
                    f"--param '{name}=[a, b]' on the command line, {name}: [a, b] in YAML")
        item_kind = _kind(default[0]) if default else "string"
        for index, item in enumerate(value):
            if _kind(item) != item_kind:
                return f"item {index} of the list is the {_kind(item)} {item!r}, expected a {item_kind} (quote it)"
        return None
    if got == expected:
        return None
    if expected == "string" and got in ("number", "boolean"):
        return (f"expected a string (the vendor's default is {default!r}), got the {got} {value!r}, which is how YAML "
                f"reads it; quote it to keep the text: --param '{name}=\"...\"' or {name}: \"...\" in YAML")
    if got in ("list", "mapping") and expected in ("string", "number", "boolean"):
        return f"expected a single {expected} (the vendor's default is {default!r}), got the {got} {value!r}"
    return f"expected a {expected} (the vendor's default is {default!r}), got the {got} {value!r}"


class Mount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    readonly: bool = True


EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class CollectiveSpec(BaseModel):
    """The vendor's collective library and how the inventory's fabric
    (harness/fabric/model.py) maps onto its variables; harness/fabric/env.py
    turns the two into a container's environment."""

    model_config = ConfigDict(extra="forbid")

    library: str = Field(min_length=1)  # NCCL, BKCL, gloo: named in messages and the record
    # Which parser reads the library's debug output for the transport it chose
    # (harness/fabric); null: the harness cannot tell, and records that.
    transport_log: Literal["nccl"] | None = None
    hcas_env: EnvName | None = None  # receives fabric.hcas joined by hcas_separator
    hcas_separator: str = ","
    socket_ifname_env: EnvName | None = None  # receives fabric.socket_ifname
    type_env: dict[Literal["ib", "ethernet"], dict[EnvName, str]] = Field(default_factory=dict)
    gdr_env: dict[EnvName, str] = Field(default_factory=dict)  # when fabric.gdr is true
    # Makes the library print the transport it chose; set on every run with a fabric.
    debug_env: dict[EnvName, str] = Field(default_factory=dict)


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
    # Name of the monitor parser for the vendor's device tool (harness/devices/registry.py), or null.
    # The device itself and the torch.distributed backend are the training side's
    # business: cases/devices.py maps the vendor name to them.
    smi: str | None = None
    # The collective library and its fabric variables; null: a fabric sets nothing.
    collective: CollectiveSpec | None = None

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
    known = available_vendors()
    if name not in known:  # a name, never a path: "../x" is refused here
        raise UserError(f"unknown vendor {name!r}; expected one of: {', '.join(known)}", field="VENDOR")
    path = DOCKERFILES_DIR / name / "vendor.yaml"
    spec = load_model(path, VendorSpec, defaults={"name": name})
    if not spec.template_path.is_file():
        raise UserError(f"template {spec.template} not found", file=str(path), field="template")
    check_spec_params(spec, str(path))
    return spec


def check_spec_params(spec: VendorSpec, file: str) -> None:
    """The spec's own template parameters (and `python`, which templates see as a
    parameter) hold no control character, and every framework pin has the kind
    of the default it overrides."""
    problem = template_value_problem("python", spec.python)
    if problem:
        raise UserError(problem, file=file, field="python")
    for key, value in spec.template_params.items():
        problem = template_value_problem(key, value)
        if problem:
            raise UserError(problem, file=file, field=f"template_params.{key}")
    for framework, pins in spec.framework_pins.items():
        for key, value in pins.items():
            problem = template_value_problem(key, value, spec.template_params.get(key, _NO_DEFAULT))
            if problem:
                raise UserError(problem, file=file, field=f"framework_pins.{framework}.{key}")


def vendors_pinning(framework: str) -> list[str]:
    """The vendors whose vendor.yaml pins this framework string (a page's 训练框架版本)."""
    return [name for name in available_vendors() if framework.strip() in load_vendor(name).framework_pins]
