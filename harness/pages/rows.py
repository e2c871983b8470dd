"""Our runs as 性能指标 rows: a RunResult (harness/core/results.py) -> MetricRow,
with the config label in the style a page uses."""

from __future__ import annotations

from harness.core.results import RunResult
from harness.pages.cells import LabelStyle
from harness.pages.model import MetricRow, VendorPage


def row_from_result(result: RunResult, label_style: LabelStyle = "fullwidth") -> MetricRow:
    """The 性能指标 row of one run; ``/`` wherever the run has no value."""
    metrics = result.metrics
    return MetricRow.from_values(
        accelerator=result.accelerator,
        nnodes=result.nnodes,
        nproc=result.nproc_per_node,
        precision=result.precision,
        fix_hp=result.fix_hp,
        e2e_time=metrics.e2e_time if metrics else None,
        p_whole=metrics.p_whole if metrics else None,
        p_train=metrics.p_train if metrics else None,
        p_core=metrics.p_core if metrics else None,
        acc_percent=metrics.acc if metrics else None,
        mem_used_gib=metrics.mem_used_gib if metrics else None,
        mem_total_gib=metrics.mem_total_gib if metrics else None,
        label_style=label_style,
    )


def label_style_of(page: VendorPage) -> LabelStyle:
    """The bracket style the page's row labels use: ``（1x8）`` or ``(1x8)``."""
    first = page.metric_rows[0].config if page.metric_rows else ""
    return "ascii" if "(" in first and "（" not in first else "fullwidth"
