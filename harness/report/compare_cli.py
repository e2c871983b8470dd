"""The `compare` command's parser and its table (harness/report/compare_runs.py does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report.noise_view import add_noise_arguments, rule_of

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from harness.report.compare_runs import Comparison


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compare = sub.add_parser(
        "compare", help="two runs or two campaigns side by side, with B/A and whether it is beyond noise",
        description="Put A and B side by side per job (case, vendor, config, fix_hp) and metric (p_core, p_train, "
                    "p_whole, acc, mfu, J/1k): the ratio B/A, and whether it leaves the noise band of the job "
                    "(from the history database beside the results, else the spread of the repeats, else none).")
    compare.add_argument("a", type=Path, help="results.json, a run folder (results/<run_id>) or a campaign folder "
                                              "(results/campaigns/<name>/<stamp>)")
    compare.add_argument("b", type=Path, help="the same kinds of path as A")
    add_noise_arguments(compare)


def _number(metric: str, value: float | None) -> str:
    if value is None:
        return "/"
    if metric == "mfu":
        return f"{value:.1%}"
    if metric == "acc":
        return f"{value:.2f}%"
    return f"{value:,.1f}"


def comparison_table(found: Comparison) -> Table:
    from rich.table import Table

    from harness.report.fit import cells

    table = Table(title=f"A: {found.a.label} ({len(found.a.runs)} run(s))  vs  B: {found.b.label} "
                        f"({len(found.b.runs)} run(s))")
    for column in ("job", "metric", "A", "B", "B/A", "noise band", "verdict"):
        table.add_column(column, justify="right" if column in ("A", "B", "B/A") else "left")
    for row in found.rows:
        noise = f"±{row.band:.1%} {row.band_source}" if row.band is not None else (row.band_source or "/")
        style = "yellow" if row.verdict.startswith("beyond") else ("dim" if row.verdict == "within noise" else None)
        values = [row.job, row.metric, _number(row.metric, row.a), _number(row.metric, row.b),
                  f"{row.ratio:.3f}" if row.ratio is not None else "/", noise, row.verdict]
        table.add_row(*cells(values), style=style)
    return table


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from rich.console import Console
    from rich.text import Text

    from harness.report.compare_runs import compare, load_side
    from harness.report.fit import print_fitting

    rule = rule_of(args)
    found = compare(load_side(args.a), load_side(args.b), rule)
    out = Console(width=max(Console().width, 160))
    print_fitting(out, comparison_table(found))
    out.print(Text(f"noise: {rule.describe()}; medians where a side has several runs", style="dim"))
    return 0
