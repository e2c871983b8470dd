"""Where the live progress goes: a terminal or a log.

On a terminal, one line per node redrawn in place (rich ``Live``: the lines are
rewritten with cursor movements a few times a second). Anywhere else (a file,
a pipe, CI, a campaign's overnight log): plain lines with a timestamp and no
control characters, one per node, when the first event is read, when a node
takes its first step, and then every PROGRESS_LOG_S.
"""

from __future__ import annotations

import time

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from harness.core.progress import ProgressBoard

PROGRESS_LOG_S = 30.0  # a log gets the nodes' lines this often
REFRESH_PER_S = 4.0  # a terminal's lines are redrawn this often (the elapsed time ticks)


def log_lines(lines: list[str], stamp: str) -> list[str]:
    """The nodes' progress lines as a log writes them."""
    return [f"{stamp} training: {line}".lstrip() for line in lines]


class ProgressShown:
    """Shows a board's lines while the watcher runs (a context manager around its loop)."""

    def __init__(self, console: Console, board: ProgressBoard) -> None:
        self.console = console
        self.board = board
        self._live: Live | None = None
        self._next_log: float | None = None  # None: nothing written to the log yet
        self._stepping = 0  # how many nodes had stepped at the last log lines

    def __enter__(self) -> ProgressShown:
        if self.console.is_terminal:
            self._live = Live(get_renderable=self._render, console=self.console,
                              refresh_per_second=REFRESH_PER_S, transient=False)
            self._live.start(refresh=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()  # its last picture stays on the screen
            self._live = None

    def _render(self) -> RenderableType:
        lines = self.board.lines(time.monotonic())
        return Group(*(Text(line, no_wrap=True, overflow="ellipsis") for line in lines))

    def show(self, now: float) -> None:
        """The live lines are redrawn on their own; a log gets its lines when something is worth it."""
        if self._live is not None or not self.board.seen:
            return
        stepping = sum(1 for progress in (self.board.node(r, now) for r in self.board.hosts) if progress.step is not None)
        if self._next_log is not None and now < self._next_log and stepping <= self._stepping:
            return
        # A campaign's log stamps every line itself (harness/campaign/view.py StampedLines).
        stamp = "" if getattr(self.console.file, "stamps_lines", False) else time.strftime("%Y-%m-%d %H:%M:%S")
        for line in log_lines(self.board.lines(now), stamp):
            self.console.print(Text(line), soft_wrap=True, highlight=False)
        self._next_log, self._stepping = now + PROGRESS_LOG_S, stepping
