"""The 环境配置 section of a vendor page: the 硬件环境 and 软件环境 lists, each
line kept as written (label, separator, value, nested lines) with the field it
fills, and read back as the fields the harness compares with a host.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, computed_field

from harness.pages.labels import HARDWARE_LABELS, HEADINGS, SOFTWARE_LABELS


class EnvEntry(BaseModel):
    """One list line of the environment section, ``- 标签：值``, with its nested lines."""

    key: str | None = None  # the canonical field this line fills; None: not interpreted
    label: str  # as written, e.g. "CPU 型号"
    value: str = ""
    separator: str = "："  # ":" or "：" as written; "" for a line without one
    children: list[EnvEntry] = Field(default_factory=list)


class EnvSection(BaseModel):
    heading: str
    entries: list[EnvEntry] = Field(default_factory=list)

    def entry(self, key: str) -> EnvEntry | None:
        return next((entry for entry in self.entries if entry.key == key), None)

    def value(self, key: str) -> str | None:
        entry = self.entry(key)
        return entry.value if entry is not None and entry.value else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def extra_fields(self) -> dict[str, str]:
        """Fields the harness does not interpret, original label -> value, in page order."""
        return {entry.label: entry.value for entry in self.entries if entry.key is None}


class HardwareEnv(EnvSection):
    heading: str = HEADINGS["hardware"][0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def machine_model(self) -> str | None:
        return self.value("machine_model") or self.value("machine_and_accelerator")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accelerator_model(self) -> str | None:
        return self.value("accelerator_model") or self.value("machine_and_accelerator")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cpu_model(self) -> str | None:
        return self.value("cpu_model")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def network_type(self) -> str | None:
        return _split_network(self.value("network"))[0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def network_rate(self) -> str | None:
        return _split_network(self.value("network"))[1]

    @classmethod
    def build(
        cls,
        *,
        machine_model: str | None = None,
        accelerator_model: str | None = None,
        cpu_model: str | None = None,
        network_type: str | None = None,
        network_rate: str | None = None,
        extra: dict[str, str] | None = None,
        separator: str = ": ",
    ) -> HardwareEnv:
        """A hardware list in the pages' wording; machine and accelerator share one
        line (``机器、加速卡型号``) when they are the same string."""
        sep = separator.strip()
        entries: list[EnvEntry] = []

        def add(key: str, value: str | None) -> None:
            if value:
                entries.append(EnvEntry(key=key, label=HARDWARE_LABELS[key][0], value=value, separator=sep))

        if machine_model and machine_model == accelerator_model:
            add("machine_and_accelerator", machine_model)
        else:
            add("machine_model", machine_model)
            add("accelerator_model", accelerator_model)
        add("cpu_model", cpu_model)
        network = "，".join(part for part in (network_type, network_rate) if part)
        add("network", network)
        for label, value in (extra or {}).items():
            entries.append(EnvEntry(label=label, value=value, separator=sep))
        return cls(entries=entries)


class SoftwareEnv(EnvSection):
    heading: str = HEADINGS["software"][0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def os(self) -> str | None:
        return self.value("os")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kernel(self) -> str | None:
        return self.value("kernel")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def driver(self) -> str | None:
        return self.value("driver")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def docker_version(self) -> str | None:
        return self.value("docker_version")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def docker_image(self) -> str | None:
        return self.value("docker_image")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def framework(self) -> str | None:
        return self.value("framework")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dependencies(self) -> dict[str, str]:
        """``{"cuda": "11.4"}``; empty for ``无``."""
        entry = self.entry("dependencies")
        if entry is None:
            return {}
        return parse_dependencies(entry)

    @classmethod
    def build(
        cls,
        *,
        os: str | None = None,
        kernel: str | None = None,
        driver: str | None = None,
        docker_version: str | None = None,
        docker_image: str | None = None,
        framework: str | None = None,
        dependencies: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> SoftwareEnv:
        """A software list in the pages' wording (full-width colons, dependencies
        as a nested list, ``无`` when there are none)."""
        entries: list[EnvEntry] = []

        def add(key: str, value: str | None) -> None:
            if value:
                entries.append(EnvEntry(key=key, label=SOFTWARE_LABELS[key][0], value=value, separator="："))

        add("os", os)
        if kernel:
            entries.append(EnvEntry(key="kernel", label=SOFTWARE_LABELS["kernel"][0], value=kernel, separator=":"))
        add("driver", driver)
        add("docker_version", docker_version)
        add("docker_image", docker_image)
        add("framework", framework)
        if dependencies is not None:
            children = [EnvEntry(label=name, value=version, separator=":") for name, version in dependencies.items()]
            entries.append(
                EnvEntry(
                    key="dependencies",
                    label=SOFTWARE_LABELS["dependencies"][0],
                    value="" if children else "无",
                    separator="：",
                    children=children,
                )
            )
        for label, value in (extra or {}).items():
            entries.append(EnvEntry(label=label, value=value, separator="："))
        return cls(entries=entries)


def _split_network(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    parts = [part.strip() for part in re.split(r"[，,]", value, maxsplit=1)]
    if len(parts) == 2:
        return parts[0] or None, parts[1] or None
    return parts[0], None


_DEPENDENCY_ITEM = re.compile(
    r"^(?P<name>[A-Za-z_][\w.+-]*?)\s*(?:(?P<op>==|>=|<=|~=|=|:)\s*|-(?=\d)|\s+(?=\d))(?P<version>\S.*)$"
)


def parse_dependencies(entry: EnvEntry) -> dict[str, str]:
    """The ``依赖软件版本`` line as name -> version: nested ``- cuda: 11.4`` lines,
    or a list written inline (``pytorch-1.12.1+cpu``, ``a==1,b>=2``), or ``无``."""
    found: dict[str, str] = {}
    value = entry.value.strip()
    if value and value.lower() not in ("无", "none"):
        for item in re.split(r"[，,;；]", value):
            item = item.strip()
            if not item:
                continue
            match = _DEPENDENCY_ITEM.match(item)
            if match is None:
                found[item] = ""
                continue
            operator = match.group("op")
            version = match.group("version").strip()
            keeps_operator = operator in (">=", "<=", "~=")
            found[match.group("name")] = f"{operator}{version}" if keeps_operator else version
    _collect_children(entry.children, "", found)
    return found


def _collect_children(children: list[EnvEntry], prefix: str, found: dict[str, str]) -> None:
    for child in children:
        name = f"{prefix}{child.label}"
        if child.value or not child.children:
            found[name] = child.value
        _collect_children(child.children, f"{name}.", found)

