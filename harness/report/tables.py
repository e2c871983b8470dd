"""Reports of finished runs: the terminal table, and the vendor-format markdown
table written beside results.json."""

from __future__ import annotations

from pathlib import Path

import jinja2
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.core.results import RunResult
from harness.expect import text as efficiency_text
from harness.fabric.busbw import render_table
from harness.fabric.record import bandwidth_table_of
from harness.hostinfo.model import EnvironmentInfo
from harness.pages.render import metric_header, render_metric_table
from harness.pages.rows import row_from_result
from harness.report import fit

LEFT_ALIGNED = {"precision", "fix_hp"}


def metric_table_markdown(results: list[RunResult]) -> str:
    """The 性能指标 table, in the reference pages' column order and formatting."""
    return render_metric_table([row_from_result(r) for r in results])


def _metric_table(results: list[RunResult]) -> Table:
    """The vendor columns plus MFU, % exp and J/1k, one row per training run; every
    cell breaks between tokens only (fix_hp after a comma, 配置 kept whole)."""
    title = " / ".join(sorted({f"{r.case} · {r.vendor}" for r in results}))
    table = Table(title=title, show_lines=False)
    table.add_column("run", justify="left", style="dim")
    table.add_column("case", justify="left")
    for index, column in enumerate(metric_header()):
        table.add_column(column, justify="left" if index == 0 or column in LEFT_ALIGNED else "right")
    for column in efficiency_text.COLUMNS:  # the harness's own columns, never on a vendor page
        table.add_column(column, justify="right")
    for result in results:
        values = [result.run_id, f"{result.case} · {result.vendor}", *row_from_result(result).cells(),
                  *efficiency_text.cells(result)]
        table.add_row(*fit.cells(values), style=None if result.status == "success" else "red")
    return table


def _print_sweep(result: RunResult, console: Console) -> None:
    """A bandwidth case as nccl-tests prints it: what ran, then one line per message
    size; no training line and no p_* columns (it trains nothing)."""
    style = "bold" if result.status == "success" else "bold red"
    console.print(Text(f"{result.run_id}: {result.case} · {result.vendor} · {result.accelerator} {result.config_name} · "
                       f"{result.precision} · fix_hp {result.fix_hp} · {result.status}", style=style), soft_wrap=True)
    for line in (efficiency_text.expected_line(result), efficiency_text.energy_line(result)):
        if line:
            console.print(Text(f"{result.run_id}: {line}", style="dim"), soft_wrap=True)
    if result.bandwidth is not None and result.bandwidth.rows:
        console.print(Text(render_table(bandwidth_table_of(result.bandwidth)).rstrip("\n")), soft_wrap=True)


def print_results(results: list[RunResult], console: Console, verbose: bool = True,
                  regressions: dict[str, list[str]] | None = None) -> None:
    """One table of every training run (failed ones included, their cells `/`
    where nothing was measured; each row names its case, vendor and config), each
    bandwidth run as its sweep table, then what each run adds: regressions, step
    times, where mem came from, the failure (its first line unless verbose: the
    whole report, the failing rank's last lines), where the logs are (verbose)."""
    training = [result for result in results if result.bandwidth is None]
    if training:
        fit.print_fitting(console, _metric_table(training))
    for result in training:
        for line in efficiency_text.notes(result):
            console.print(Text(f"{result.run_id}: {line}", style="dim"), soft_wrap=True)
    for result in results:
        if result.bandwidth is not None:
            _print_sweep(result, console)
    for result in results:
        for regression in (regressions or {}).get(result.run_id, []):
            console.print(Text.assemble((f"{result.run_id} regression: ", "bold yellow"), regression))
        metrics = result.metrics
        if metrics is not None and verbose and result.bandwidth is None:
            console.print(Text(
                f"{result.run_id}: world size {metrics.world_size} · {metrics.samples} samples in {metrics.steps} steps"
                f" · step time p50/p90/max {metrics.step_s_p50 or 0:.3f}/{metrics.step_s_p90 or 0:.3f}/"
                f"{metrics.step_s_max or 0:.3f} s · mem from {metrics.mem_source}", style="dim"))
        for node in result.nodes:
            if node.transport is not None:
                console.print(Text(f"{result.run_id}: node {node.node_rank} ({node.host}) transport: "
                                   f"{node.transport.summary}", style="dim"))
        for warning in result.warnings:
            console.print(Text.assemble((f"{result.run_id} warning: ", "yellow"), warning))
        for verdict in result.node_verdicts:
            if verdict.verdict != "ok":
                console.print(Text.assemble((f"{result.run_id} ", "yellow"), verdict.line()), soft_wrap=True)
        if result.status != "success":
            failure = (result.failure or "unknown failure").strip()
            if not verbose and "\n" in failure:
                failure = failure.splitlines()[0] + " (--verbose: the whole report)"
            console.print(Text.assemble((f"{result.run_id} FAILED: ", "bold red"), failure))
        if verbose:
            for node in result.nodes:
                console.print(Text(f"{result.run_id}: logs of node {node.node_rank} ({node.host}): {node.log_dir}",
                                   style="dim"))


_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True,  # failure text and log lines are arbitrary
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _environment_rows(result: RunResult) -> tuple[list[str], list[tuple[str, list[str]]]]:
    hosts = sorted(result.environment)
    envs = [EnvironmentInfo.model_validate(result.environment[h]).comparable_fields() for h in hosts]
    fields = list(envs[0]) if envs else []
    return hosts, [(name, [env.get(name, "") for env in envs]) for name in fields]


def report_html(results: list[RunResult]) -> str:
    runs = []
    for result in results:
        hosts, rows = _environment_rows(result)
        runs.append({"result": result, "cells": row_from_result(result).cells(),
                     "efficiency_cells": efficiency_text.cells(result), "efficiency_notes": efficiency_text.notes(result),
                     "hosts": hosts, "environment_rows": rows})
    title = " / ".join(sorted({f"{r.case} · {r.vendor} · {r.config_name}" for r in results}))
    return _TEMPLATES.get_template("report.html.j2").render(title=title, header=metric_header(), runs=runs,
                                                            efficiency_header=efficiency_text.COLUMNS)


def report_texts(results: list[RunResult]) -> dict[str, str]:
    """README.md (the 性能指标 table in the pages' format) and report.html (the
    same table with each run's failure, phases, nodes and environment), by file name."""
    return {"README.md": "* 性能指标\n\n" + metric_table_markdown(results) + _node_notes(results),
            "report.html": report_html(results)}


def _node_notes(results: list[RunResult]) -> str:
    """The notes under the table: one line per node of each run (ok, slow, input-bound, hung, lost)."""
    lines = [f"- {result.run_id}: {verdict.line()}" for result in results for verdict in result.node_verdicts]
    return "\n* nodes\n\n" + "\n".join(lines) + "\n" if lines else ""


def write_reports(results: list[RunResult], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in report_texts(results).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder / "README.md"
