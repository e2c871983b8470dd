"""Reports of finished runs: the terminal table, and the vendor-format markdown
table written beside results.json."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness import vendor_page  # noqa
from harness.results import RunResult

COLUMNS = ("配置", "precision", "fix_hp", "e2e_time", "p_whole", "p_train", "p_core", "acc", "mem")


def metric_table_markdown(results: list[RunResult]) -> str:
    """The 性能指标 table, in the reference pages' column order and formatting."""
    return vendor_page.render_metric_table([vendor_page.row_from_result(r) for r in results])


def print_result(result: RunResult, console: Console) -> None:
    table = Table(title=f"{result.case} · {result.vendor} · run {result.run_id}", show_lines=False)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("配置", "precision", "fix_hp") else "right")
    row = vendor_page.row_from_result(result)
    table.add_row(*vendor_page.row_cells(row))
    console.print(table)
    metrics = result.metrics
    if metrics is not None:
        extra = (f"world size {metrics.world_size} · {metrics.samples} samples in {metrics.steps} steps"
                 f" · step time p50/p90/max {metrics.step_s_p50 or 0:.3f}/{metrics.step_s_p90 or 0:.3f}/"
                 f"{metrics.step_s_max or 0:.3f} s · mem from {metrics.mem_source}")
        console.print(Text(extra, style="dim"))
    if result.status != "success":
        console.print(Text.assemble(("FAILED: ", "bold red"), result.failure or "unknown failure"))
    for node in result.nodes:
        console.print(Text(f"logs of node {node.node_rank} ({node.host}): {node.log_dir}", style="dim"))


def write_reports(results: list[RunResult], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "README.md"
    path.write_text("* 性能指标\n\n" + metric_table_markdown(results), encoding="utf-8")
    return path
