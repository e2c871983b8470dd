"""Reproducing a vendor page.

A vendor README page (harness/pages/vendor_page.py) is, besides the format our own
runs are published in (harness/pages/readme.py), the environment a run has to
stand in and the numbers it is measured against.

    page + captured hosts     -> host_drift      -> HostDrift  (``env diff``, the REPRO check)
    page + vendor.yaml        -> framework_pins  -> Job.template_overrides (REPRO)
    page + finished run       -> compare         -> Comparison (reference.md, results.json)

The host fields are checked on the hosts (environment.drift); what the image
provides (framework, its dependencies) is checked through the vendor's
``framework_pins``: the page's framework string must be pinned, and the image
must be built with the pinned template parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness import REPO_ROOT
from harness.backends.docker import DockerSshBackend
from harness.backends.launch import RunPlan
from harness.core.inventory import Inventory
from harness.core.results import RunResult
from harness.core.vendor import VendorSpec, load_vendor, vendors_pinning
from harness.errors import UserError
from harness.hostinfo.environment import (
    DriftRow,
    EnvironmentInfo,
    drift,
)
from harness.pages.vendor_page import (
    MetricRow,
    VendorPage,
    env_spec_from_page,
    fix_hp_params,
    label_style_of,
    render_table,
    row_from_result,
)

FRAMEWORK_FIELD = "训练框架版本"

FRAMEWORK_FIELD = "训练框架版本"


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


MATCH_MARKS = {True: "✓", False: "✗", None: "?"}


def drift_table(report: HostDrift, title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("field", "expected (page)", "actual (host)", "match", "effect"):
        table.add_column(column, justify="center" if column == "match" else "left")
    for row in report.rows:
        effect = _effect(row)
        style = "red" if effect == "drift" else ("yellow" if effect else None)
        table.add_row(Text(row.field), Text(row.expected), Text(row.actual), MATCH_MARKS[row.matches],
                      Text(effect), style=style)
    return table


def drift_markdown(report: HostDrift) -> str:
    rows = [[row.field, row.expected, row.actual, MATCH_MARKS[row.matches], _effect(row)] for row in report.rows]
    return render_table(["field", "expected (page)", "actual (host)", "match", "effect"], rows)


def capture_hosts(inventory: Inventory, smi: str | None) -> dict[str, EnvironmentInfo]:
    """Every inventory host's environment, captured as a run captures it."""
    backend = DockerSshBackend(inventory)
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
            host_drift(self.page, env, plan.vendor, params=plan.image.params, tag=plan.image.tag, host=host)
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


# --------------------------------------------------------------------------- page vs a finished run

COMPARED_COLUMNS = ("e2e_time", "p_whole", "p_train", "p_core", "acc", "mem")


def pick_row(page: VendorPage, nnodes: int, nproc: int, fix_hp: str) -> MetricRow | None:
    """The page's row for this config: the one with the same fix_hp when the
    page has several, else the first; None when the page has none."""
    same = [row for row in page.metric_rows if (row.nnodes, row.nproc) == (nnodes, nproc)]
    if not same:
        return None
    wanted = fix_hp_params(fix_hp)
    return next((row for row in same if row.fix_hp_params == wanted), same[0])


class ComparisonRow(BaseModel):
    column: str
    page: str  # the page's cell as written
    ours: str  # our cell, formatted as the page table formats it
    ratio: float | None = None  # ours / page; None where either has no number

    @property
    def ratio_text(self) -> str:
        return "" if self.ratio is None else f"{self.ratio:.2f}"


class Comparison(BaseModel):
    page: str  # the page's file
    page_row: str | None  # its row's config label, None when it has none for this config
    page_fix_hp: str | None = None
    run_id: str
    run_row: str
    run_fix_hp: str
    rows: list[ComparisonRow] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def compare(result: RunResult, page: VendorPage, source: str) -> Comparison:
    """The finished run beside the page's row for the same config: both cells
    and ours/page per column (mem: used GiB)."""
    ours = row_from_result(result, label_style_of(page))
    metrics = result.metrics
    our_values: dict[str, float | None] = {
        "e2e_time": metrics.e2e_time if metrics else None,
        "p_whole": metrics.p_whole if metrics else None,
        "p_train": metrics.p_train if metrics else None,
        "p_core": metrics.p_core if metrics else None,
        "acc": metrics.acc if metrics else None,
        "mem": metrics.mem_used_gib if metrics else None,
    }
    row = pick_row(page, result.nnodes, result.nproc_per_node, result.fix_hp)
    notes: list[str] = []
    page_texts: dict[str, str] = {column: "" for column in COMPARED_COLUMNS}
    page_values: dict[str, float | None] = {column: None for column in COMPARED_COLUMNS}
    if row is None:
        notes.append(f"the page has no row for {result.config_name}: nothing to compare with")
    else:
        page_texts = {
            "e2e_time": row.e2e_time.text, "p_whole": row.p_whole.text, "p_train": row.p_train.text,
            "p_core": row.p_core.text, "acc": row.acc.text, "mem": row.mem.text,
        }
        page_values = {
            "e2e_time": row.e2e_time.value, "p_whole": row.p_whole.value, "p_train": row.p_train.value,
            "p_core": row.p_core.value, "acc": row.acc.percent, "mem": row.mem.used_gib,
        }
        if row.fix_hp_params != fix_hp_params(result.fix_hp):
            notes.append(f"the page has no {result.config_name} row with fix_hp {result.fix_hp}; "
                         f"compared with its first {result.config_name} row (fix_hp {row.fix_hp})")
        if row.precision.strip().lower() != result.precision.strip().lower():
            notes.append(f"precision differs: page {row.precision}, ours {result.precision}")
    if result.status != "success":
        notes.append(f"the run failed: {(result.failure or 'unknown failure').splitlines()[0]}")
    our_texts = {
        "e2e_time": ours.e2e_time.text, "p_whole": ours.p_whole.text, "p_train": ours.p_train.text,
        "p_core": ours.p_core.text, "acc": ours.acc.text, "mem": ours.mem.text,
    }
    rows = [
        ComparisonRow(column=column, page=page_texts[column], ours=our_texts[column],
                      ratio=_ratio(our_values[column], page_values[column]))
        for column in COMPARED_COLUMNS
    ]
    return Comparison(
        page=source,
        page_row=row.config if row else None,
        page_fix_hp=row.fix_hp if row else None,
        run_id=result.run_id,
        run_row=ours.config,
        run_fix_hp=result.fix_hp,
        rows=rows,
        notes=notes,
    )


COMPARISON_HEADER = ["column", "page", "ours", "ours/page"]


def _column_label(column: str) -> str:
    return "mem (used GiB)" if column == "mem" else column


def comparison_table(comparison: Comparison) -> Table:
    title = f"run {comparison.run_id} ({comparison.run_row}) vs {comparison.page_row or 'no row'} of {comparison.page}"
    table = Table(title=title)
    for column in COMPARISON_HEADER:
        table.add_column(column, justify="left" if column == "column" else "right")
    for row in comparison.rows:
        table.add_row(_column_label(row.column), Text(row.page), Text(row.ours), row.ratio_text)
    return table


def comparison_markdown(comparison: Comparison) -> str:
    rows = [[_column_label(row.column), row.page, row.ours, row.ratio_text] for row in comparison.rows]
    return render_table(COMPARISON_HEADER, rows)


def reference_markdown(comparison: Comparison, reports: Sequence[HostDrift], allow_drift: bool) -> str:
    """reference.md: the comparison, then each host's environment drift."""
    page_row = (f"{comparison.page_row} (fix_hp {comparison.page_fix_hp})"
                if comparison.page_row else f"none for {comparison.run_row}")
    lines = [
        f"# Run {comparison.run_id} vs {comparison.page}",
        "",
        f"- page row: {page_row}",
        f"- our row: {comparison.run_row} (fix_hp {comparison.run_fix_hp})",
        *(f"- note: {note}" for note in comparison.notes),
        "",
        comparison_markdown(comparison),
    ]
    fields = drifted_fields(reports)
    if reports:
        state = (f"drift in {', '.join(fields)}, run with --allow-drift" if fields and allow_drift
                 else f"drift in {', '.join(fields)}" if fields else "no drift in the checked fields")
        lines += ["", f"## Environment vs the page ({state})"]
        for report in reports:
            lines += ["", f"### {report.host}", "", drift_markdown(report)]
    return "\n".join(lines) + "\n"


def reference_record(comparison: Comparison, page: VendorPage, pins: dict[str, Any],
                     reports: Sequence[HostDrift], allow_drift: bool) -> dict[str, Any]:
    """What results.json keeps in ``reference``."""
    return {
        "page": comparison.page,
        "title": page.title,
        "framework": page.software.framework,
        "pins": pins,
        "allow_drift": allow_drift,
        "drifted_fields": drifted_fields(reports),
        "drift": {report.host: [row.model_dump() for row in report.rows] for report in reports},
        "comparison": comparison.model_dump(),
    }


def record_reference(result: RunResult, page: VendorPage, source: str, pins: dict[str, Any],
                     gate: EnvironmentGate, out_dir: Path) -> tuple[RunResult, Comparison]:
    """Compare the finished run with the page, write reference.md and the
    ``reference`` field of results.json into the run's folder."""
    comparison = compare(result, page, source)
    updated = result.model_copy(update={
        "reference": reference_record(comparison, page, pins, gate.reports, gate.allow_drift),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "reference.md").write_text(reference_markdown(comparison, gate.reports, gate.allow_drift),
                                          encoding="utf-8")
    (out_dir / "results.json").write_text(updated.model_dump_json(indent=2), encoding="utf-8")
    return updated, comparison
