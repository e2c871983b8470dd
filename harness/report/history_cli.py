"""The `history` command: past runs from the results database, newest first, in a
table whose cells break between tokens only (harness/report/fit.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from harness.core.kinds import FailureKind, RunStatus
from harness.report.noise_view import add_noise_arguments, rule_of

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from harness.report.history import HistoryRow
    from harness.report.noise import NoiseRule

STATUSES = get_args(RunStatus)
KINDS = get_args(FailureKind)
COLUMNS = ("run", "finished (UTC)", "case", "vendor", "config", "precision", "fix_hp", "status", "kind",
           "p_core", "p_train", "p_whole", "acc", "vs history")
_AGO = re.compile(r"^(\d+)([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
# A pipe or a log file: one line per run rather than rich's default of 80 columns.
PIPE_WIDTH = 200


def since_text(text: str, now: dt.datetime | None = None) -> str:
    """--since as the ISO timestamp (UTC, seconds) that finished_at is compared with:
    a duration back from now (`90m`, `12h`, `7d`), a date (`2026-12-01`) or an ISO
    date and time (a time without zone is UTC)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    ago = _AGO.match(text.strip())
    if ago:
        moment = now - dt.timedelta(seconds=int(ago.group(1)) * _UNIT_S[ago.group(2)])
    else:
        try:
            moment = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a duration (90m, 12h, 7d), a date (2026-12-01) or an ISO time, got {text!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_results: Path) -> None:
    past = sub.add_parser("history", help="list past runs from the results database, newest first",
                          description="List past runs from RESULTS/history.sqlite, newest first, with the full "
                                      "run ids that `readme`, `collect` and `report` take.")
    past.add_argument("--results", type=Path, default=default_results, help="results folder (default results/)")
    past.add_argument("--case", help="only this case")
    past.add_argument("--vendor", help="only this vendor")
    past.add_argument("--status", choices=(*STATUSES, *KINDS), metavar="STATUS",
                      help=f"only runs with this status ({', '.join(STATUSES)}) or failure kind "
                           f"({', '.join(KINDS)})")
    past.add_argument("--since", type=since_text, metavar="WHEN",
                      help="only runs finished since: a duration back from now (90m, 12h, 7d), a date "
                           "(2026-12-01) or an ISO time (UTC unless it names a zone)")
    past.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    add_noise_arguments(past)


def _finished(stamp: str) -> str:
    """`2026-12-06T01:30:10+00:00` as `2026-12-06 01:30:10` (the header says UTC)."""
    return stamp.replace("T", " ").removesuffix("+00:00")


def _values(row: HistoryRow, database: Path, rule: NoiseRule) -> list[str]:
    """One run's cells, in COLUMNS order."""
    from harness.pages.cells import format_acc, format_throughput
    from harness.report import history
    from harness.report.noise_view import cell

    numbers = [format_throughput(value) for value in (row.p_core, row.p_train, row.p_whole)]
    return [row.run_id, _finished(row.finished_at), row.case, row.vendor, f"{row.accelerator} {row.config}",
            row.precision, row.fix_hp, row.status, row.failure_kind or "/", *numbers, format_acc(row.acc),
            cell(history.check_row(database, row, rule))]


def history_table(rows: list[HistoryRow], database: Path, rule: NoiseRule, title: str) -> Table:
    from rich import box
    from rich.table import Table

    from harness.report.fit import cells

    # No vertical rules: the 14 columns keep their width for the cells.
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True,
                  pad_edge=False)
    for column in COLUMNS:
        table.add_column(column, justify="right" if column.startswith("p_") or column == "acc" else "left")
    for row in rows:
        table.add_row(*cells(_values(row, database, rule)), style=None if row.status == "success" else "red")
    return table


def _card(values: list[str], width: int) -> list[str]:
    """One run in a few lines (`name value` pairs, folded between tokens): the
    layout for a terminal narrower than the table's narrowest whole-token width."""
    from harness.report.fit import fold

    named = dict(zip(COLUMNS, values))
    head = f"{named['run']}  {named['finished (UTC)']}  {named['status']}"
    if named["kind"] != "/":
        head += f" ({named['kind']})"
    rest = [" · ".join(f"{name} {named[name]}" for name in group) for group in (
        ("case", "vendor", "config", "precision"), ("fix_hp",), ("p_core", "p_train", "p_whole", "acc"),
        ("vs history",))]
    return fold(head, width) + [f"  {line}" for text in rest for line in fold(text, width - 2)]


def print_history(console: Console, results: Path, rows: list[HistoryRow], rule: NoiseRule) -> None:
    """The table when its whole tokens fit the console, else one card per run."""
    from rich.text import Text

    from harness.report import history
    from harness.report.fit import narrowest, print_fitting

    database = results / history.HISTORY_FILE
    title = f"runs in {results}"
    table = history_table(rows, database, rule, title)
    if narrowest(console, table) <= console.width:
        print_fitting(console, table)
        return
    console.print(Text(title, style="bold"))
    for row in rows:
        style = "" if row.status == "success" else "red"
        for line in _card(_values(row, database, rule), console.width):
            console.print(Text(line, style=style), soft_wrap=True)


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    from rich.console import Console

    from harness.report import history

    database = args.results / history.HISTORY_FILE
    status = args.status if args.status in STATUSES else None
    kind = args.status if args.status in KINDS else None
    rows = history.runs(database, args.case, args.vendor, args.limit, status, kind, args.since)
    if not rows:
        filtered = any(value is not None for value in (args.case, args.vendor, args.status, args.since))
        console.print(f"no run in {database} matches" if filtered else f"no runs recorded in {database}",
                      highlight=False)
        return 0
    out = Console()
    if not out.is_terminal:
        out = Console(width=PIPE_WIDTH)
    print_history(out, args.results, rows, rule_of(args))
    return 0
