"""Table cells that break only between tokens, never inside one.

rich wraps a cell at spaces and folds a word that does not fit at any
character (`i|mage_size`, `（1x1` / `）`). A TokenCell breaks after a comma or
at a space only, measures its width in terminal cells (a CJK character takes
two), and tells the table its narrowest width is its longest token, so a
column is never narrower than a whole token. print_fitting prints a table on a
console at least as wide as the table's narrowest layout: at a narrow terminal
cells are folded at token boundaries and the table is wider than the terminal
rather than cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# A token: up to and including a comma, or a run of non-spaces (spaces between tokens are dropped at a break).
_TOKEN = re.compile(r"[^,\s]*,|[^,\s]+")


def tokens(text: str) -> list[str]:
    """The unbreakable pieces of one line: `bs=4,lr=0.1 x` -> `bs=4,`, `lr=0.1`, `x`."""
    return _TOKEN.findall(text)


def fold(text: str, width: int) -> list[str]:
    """Each line of text packed greedily into lines of at most `width` cells, broken
    only between tokens (a token wider than `width` gets a line of its own)."""
    lines: list[str] = []
    for source in text.splitlines() or [""]:
        line = ""
        for match in _TOKEN.finditer(source):
            token = match.group()
            # The spaces before this token in the source, kept when the token joins the line.
            gap = " " if line and source[match.start() - 1:match.start()].isspace() else ""
            if line and cell_len(line + gap + token) > width:
                lines.append(line)
                line, gap = "", ""
            line += gap + token
        lines.append(line)
    return lines


class TokenCell:
    """One table cell whose text breaks only between tokens."""

    def __init__(self, text: str, style: str = "") -> None:
        self.text = text
        self.style = style

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        lines = self.text.splitlines() or [""]
        widest_token = max((cell_len(token) for line in lines for token in tokens(line)), default=0)
        return Measurement(widest_token, max(cell_len(line) for line in lines))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("\n".join(fold(self.text, options.max_width)), style=self.style,
                   justify=options.justify or "left", overflow="fold", no_wrap=True)


def cells(values: Iterable[str]) -> list[TokenCell]:
    return [TokenCell(value) for value in values]


def fit_widths(minimums: list[int], maximums: list[int], available: int) -> list[int]:
    """Column widths that fit `available` where they can: each column starts at its
    widest cell and the widest column that is above its narrowest whole token gives
    one cell at a time (rich's own shrinking ignores the minimums)."""
    widths = list(maximums)
    while sum(widths) > available:
        shrinkable = [i for i, width in enumerate(widths) if width > minimums[i]]
        if not shrinkable:
            break
        widths[max(shrinkable, key=lambda i: widths[i])] -= 1
    return widths


def _column_ranges(console: Console, table: Table) -> tuple[list[int], list[int]]:
    """Each column's (narrowest whole-token, widest) width, padding included."""
    wide = console.options.update_width(10_000)
    ranges = [table._measure_column(console, wide, column) for column in table.columns]
    return [r.minimum for r in ranges], [r.maximum for r in ranges]


def narrowest(console: Console, table: Table) -> int:
    """The table's width with every column at its longest token (borders included)."""
    return sum(_column_ranges(console, table)[0]) + table._extra_width


def print_fitting(console: Console, table: Table) -> None:
    """The table at the console's width, its columns never narrower than their
    longest token; when even that is wider than the console, at that width (the
    lines then run past the terminal's edge; no cell is cut)."""
    minimums, maximums = _column_ranges(console, table)
    widths = fit_widths(minimums, maximums, console.width - table._extra_width)
    for column, width in zip(table.columns, widths):
        column.width = max(1, width - table._get_padding_width(column._index))
    needed = sum(widths) + table._extra_width
    if needed <= console.width:
        console.print(table)
        return
    narrower = console.width
    console.width = needed
    try:
        console.print(table)
    finally:
        console.width = narrower
