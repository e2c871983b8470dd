"""Reproducing a vendor page, after the run: the finished run beside the
page's row for the same config (harness/pages/model.py), written to
reference.md and to the ``reference`` field of results.json.

    page + finished run       -> compare         -> Comparison (reference.md, results.json)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.table import Table
from rich.text import Text

from harness.core.record import write_atomic
from harness.core.results import RunResult
from harness.pages.cells import fix_hp_params
from harness.pages.model import MetricRow, VendorPage
from harness.pages.render import render_table
from harness.pages.repro import EnvironmentGate, HostDrift, drift_markdown, drifted_fields
from harness.pages.rows import label_style_of, row_from_result

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


def _cell_texts(row: MetricRow) -> dict[str, str]:
    """The compared cells of a row, as written."""
    return {
        "e2e_time": row.e2e_time.text, "p_whole": row.p_whole.text, "p_train": row.p_train.text,
        "p_core": row.p_core.text, "acc": row.acc.text, "mem": row.mem.text,
    }


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
        page_texts = _cell_texts(row)
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
    our_texts = _cell_texts(ours)
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
    write_atomic(out_dir / "results.json", updated.model_dump_json(indent=2))
    return updated, comparison
