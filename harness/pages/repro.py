"""Reproducing a vendor page, before the run: the image it asks for and the
hosts it has to stand on.

A vendor README page (harness/pages/model.py) is, besides the format our own
runs are published in (harness/pages/readme.py), the environment a run has to
stand in and the numbers it is measured against (harness/pages/compare.py).

    page + vendor.yaml        -> framework_pins  -> Job.template_overrides (REPRO)
    page + captured hosts     -> host_drift      -> HostDrift  (``env diff``, the REPRO check)

The host fields are checked on the hosts (``drift``, harness/hostinfo/compare.py); what the image
provides (framework, its dependencies) is checked through the vendor's
``framework_pins``: the page's framework string must be pinned, and the image
must be built with the pinned template parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness import REPO_ROOT
from harness.backends.registry import make_backend
from harness.core.inventory import Inventory
from harness.core.plan import RunPlan
from harness.core.vendor import VendorSpec, load_vendor, vendors_pinning
from harness.errors import UserError
from harness.hostinfo.compare import MATCH_MARKS, DriftRow, drift
from harness.hostinfo.model import EnvironmentInfo
from harness.pages.labels import SOFTWARE_LABELS
from harness.pages.model import VendorPage
from harness.pages.render import render_table

FRAMEWORK_FIELD = SOFTWARE_LABELS["framework"][0]  # 训练框架版本


# --------------------------------------------------------------------------- page -> image pins


def _vendor_file(vendor: VendorSpec) -> str:
    path = vendor.folder / "vendor.yaml"
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def vendor_for_page(page: VendorPage) -> VendorSpec | None:
    """The one vendor that pins the page's framework, if exactly one does."""
    framework = page.software.framework
    names = vendors_pinning(framework) if framework else []
    return load_vendor(names[0]) if len(names) == 1 else None


def framework_pins(page: VendorPage, vendor: VendorSpec, source: str) -> dict[str, Any]:
    """The template parameters that build the page's framework on this vendor
    ({} when the page names no framework). A framework the vendor does not pin
    is a UserError naming the page, the field and the known pins."""
    framework = page.software.framework
    if not framework:
        return {}
    pins = vendor.framework_pins.get(framework.strip())
    if pins is not None:
        return dict(pins)
    known = ", ".join(sorted(vendor.framework_pins)) or "none"
    others = [name for name in vendors_pinning(framework) if name != vendor.name]
    hint = (f"; VENDOR={others[0]} pins it" if others
            else f"; add it to framework_pins in {_vendor_file(vendor)} with the template_params that build it")
    raise UserError(
        f"framework {framework!r} has no pin in {_vendor_file(vendor)} (framework_pins); "
        f"known pins there: {known}{hint}",
        file=source,
        field=FRAMEWORK_FIELD,
    )


# --------------------------------------------------------------------------- page vs hosts

_MEMORY_IN_NAME = re.compile(r"(?<![\d.])(?P<size>\d+(?:\.\d+)?)\s*G(?:i?B)?(?![A-Za-z])", re.IGNORECASE)


def device_memory_from_name(name: str | None) -> float | None:
    """40.0 from ``NVIDIA_A100-SXM4-40GB``, 32.0 from ``Iluvatar BI-V100 32GB``."""
    if not name:
        return None
    match = _MEMORY_IN_NAME.search(name)
    return float(match.group("size")) if match else None


def env_spec_from_page(page: VendorPage) -> dict[str, str | float | dict[str, str] | None]:
    """The page's environment flattened into the fields ``drift`` (harness/hostinfo/compare.py) compares."""
    hardware, software = page.hardware, page.software
    memory = device_memory_from_name(hardware.accelerator_model)
    if memory is None:
        totals = [row.mem.total_gib for row in page.metric_rows if row.mem.total_gib is not None]
        memory = max(totals) if totals else None
    return {
        "machine_model": hardware.machine_model,
        "accelerator_model": hardware.accelerator_model,
        "device_memory_gib": memory,
        "cpu_model": hardware.cpu_model,
        "network_type": hardware.network_type,
        "network_rate": hardware.network_rate,
        "os": software.os,
        "kernel": software.kernel,
        "driver": software.driver,
        "docker_version": software.docker_version,
        "docker_image": software.docker_image,
        "framework": software.framework,
        "dependencies": software.dependencies,
    }


# Fields whose drift stops `bench --repro` and makes `env diff` exit 1. The
# others (machine, CPU, network) are shown but do not decide.
CHECKED_FIELDS = frozenset(
    {"accelerator_model", "device_memory_gib", "os", "kernel", "driver", "docker_version", "framework"}
)
# What the image provides, not the host: checked through the pins.
IMAGE_FIELDS = frozenset({"docker_image", "framework", "dependencies"})


class HostDrift(BaseModel):
    host: str
    rows: list[DriftRow] = Field(default_factory=list)

    @property
    def drifted(self) -> list[DriftRow]:
        """Checked fields that do not match."""
        return [row for row in self.rows if row.matches is False and row.field in CHECKED_FIELDS]


def framework_check(page: VendorPage, vendor: VendorSpec | None, params: dict[str, Any] | None) -> DriftRow | None:
    """The framework row: the page's framework must be pinned by the vendor,
    and the image (``params``, when one is planned) built with the pinned values."""
    framework = page.software.framework
    if not framework:
        return None
    if vendor is None:
        return DriftRow(field="framework", expected=framework,
                        actual="not checked: no vendor pins it (give --vendor)", matches=None)
    pins = vendor.framework_pins.get(framework.strip())
    if pins is None:
        return DriftRow(field="framework", expected=framework,
                        actual=f"no pin in {_vendor_file(vendor)}", matches=False)
    pinned = ", ".join(f"{key}={value}" for key, value in pins.items())
    if params is None:
        return DriftRow(field="framework", expected=framework,
                        actual=f"pinned by {vendor.name}: {pinned}", matches=True)
    off = {key: params.get(key) for key, value in pins.items() if params.get(key) != value}
    if off:
        built = ", ".join(f"{key}={value}" for key, value in off.items())
        return DriftRow(field="framework", expected=framework,
                        actual=f"image built with {built}, the pin is {pinned}", matches=False)
    return DriftRow(field="framework", expected=framework, actual=f"image built with {pinned}", matches=True)


def image_rows(page: VendorPage, vendor: VendorSpec | None, params: dict[str, Any] | None,
               tag: str | None) -> list[DriftRow]:
    rows: list[DriftRow] = []
    software = page.software
    if software.docker_image:
        built = f"the harness builds {tag}" if tag else "the harness builds its own image"
        rows.append(DriftRow(field="docker_image", expected=software.docker_image,
                             actual=f"not used: {built}", matches=None))
    framework = framework_check(page, vendor, params)
    if framework is not None:
        rows.append(framework)
    for name, version in software.dependencies.items():
        rows.append(DriftRow(field=f"dependencies.{name}", expected=version or "(any)",
                             actual="provided by the image", matches=None))
    return rows


def host_drift(page: VendorPage, env: EnvironmentInfo, vendor: VendorSpec | None, *,
               params: dict[str, Any] | None = None, tag: str | None = None, host: str | None = None) -> HostDrift:
    """One host's captured environment against the page."""
    spec = env_spec_from_page(page)
    host_spec = {key: value for key, value in spec.items() if key not in IMAGE_FIELDS}
    if not spec.get("accelerator_model"):
        # without an accelerator on the page, its mem column says nothing about a device
        host_spec["device_memory_gib"] = None
    return HostDrift(host=host or env.host, rows=drift(host_spec, env) + image_rows(page, vendor, params, tag))


def drifted_fields(reports: Sequence[HostDrift]) -> list[str]:
    return sorted({row.field for report in reports for row in report.drifted})


def _effect(row: DriftRow) -> str:
    if row.matches is False:
        return "drift" if row.field in CHECKED_FIELDS else "differs (not checked)"
    if row.matches is None:
        return "not checked"
    return ""


DRIFT_HEADER = ["field", "expected (page)", "actual (host)", "match", "effect"]


def _drift_cells(row: DriftRow) -> list[str]:
    return [row.field, row.expected, row.actual, MATCH_MARKS[row.matches], _effect(row)]


def drift_table(report: HostDrift, title: str | None = None) -> Table:
    table = Table(title=title)
    for column in DRIFT_HEADER:
        table.add_column(column, justify="center" if column == "match" else "left")
    for row in report.rows:
        field_, expected, actual, match, effect = _drift_cells(row)
        style = "red" if effect == "drift" else ("yellow" if effect else None)
        table.add_row(Text(field_), Text(expected), Text(actual), match, Text(effect), style=style)
    return table


def drift_markdown(report: HostDrift) -> str:
    return render_table(DRIFT_HEADER, [_drift_cells(row) for row in report.rows])


def capture_hosts(inventory: Inventory, smi: str | None) -> dict[str, EnvironmentInfo]:
    """Every inventory host's environment, captured as a run captures it."""
    backend = make_backend(inventory)
    try:
        return backend.capture_hosts(inventory.hosts, smi)
    finally:
        backend.close()


@dataclass
class EnvironmentGate:
    """run_job's ``check_environment`` for ``bench --repro``: called after
    preflight, before the image is built or anything started. Prints the drift
    table of every host; on drift of a checked field it raises a UserError,
    unless ``allow_drift``, when it warns and keeps the drift for results.json."""

    page: VendorPage
    source: str
    allow_drift: bool
    console: Console
    reports: list[HostDrift] = field(default_factory=list)

    @property
    def drifted_fields(self) -> list[str]:
        return drifted_fields(self.reports)

    def __call__(self, plan: RunPlan, environments: dict[str, EnvironmentInfo]) -> None:
        self.reports = [
            host_drift(self.page, env, plan.vendor, params=plan.image.params if plan.image else {},
                       tag=plan.image.tag if plan.image else "", host=host)
            for host, env in environments.items()
        ]
        for report in self.reports:
            self.console.print(drift_table(report, f"{report.host} vs {self.source}"))
        fields = self.drifted_fields
        if not fields:
            self.console.print(Text(f"environment matches {self.source}", style="green"), soft_wrap=True)
            return
        if not self.allow_drift:
            raise UserError(
                f"the hosts' environment drifts from the page in {', '.join(fields)} (see the table above); "
                "nothing was started. Make the hosts match the page, or run anyway with ALLOW_DRIFT=1 "
                "(--allow-drift), which records the drift in results.json",
                file=self.source,
            )
        self.console.print(Text.assemble(
            ("warning: ", "yellow"),
            f"running although the environment drifts from {self.source} in {', '.join(fields)} "
            "(--allow-drift); the drift is recorded in results.json"), soft_wrap=True)
