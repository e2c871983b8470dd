"""What a campaign shows while it runs.

On a terminal: a rich ``Live`` display refreshed in place, the job list (done,
running, waiting, attempts) with the running job's throughput (rank 0's latest
step, from run_job's ``on_progress``) and elapsed time, and the counts; each
transition and event prints one line above it, and the running job's own
output (phases, its spinner) goes on as before. Elsewhere (the overnight log):
plain lines, one per event, nothing redrawn, and every line of the log (the
runs' own output included) begins with the time (``stamped``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections import Counter
from typing import IO, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.campaign.state import Attempt, CampaignState, Unit
from harness.core.watch import StepProgress

_STYLES = {"success": "green", "failed": "red", "running": "yellow", "waiting": "dim", "interrupted": "magenta"}
REFRESH_PER_S = 1.0  # the elapsed times tick once a second

RunProgress = tuple[str, StepProgress]  # (the run id it belongs to, its latest step)


def _cause(last: Attempt | None) -> str:
    if last is None or last.status in ("success", "running"):
        return ""
    first = last.failure.splitlines()[0] if last.failure else ""
    return f"{last.failure_kind or last.status}: {first}"[:160]


def _attempts(unit: Unit) -> str:
    """How many attempts, and which of them do not use up a retry (and why)."""
    uncounted = Counter(a.status for a in unit.attempts if a.status in ("interrupted", "abandoned"))
    if not uncounted:
        return f"{len(unit.attempts)}"
    parts = ", ".join(f"{count} {status}" for status, count in uncounted.items())
    total = sum(uncounted.values())
    return f"{len(unit.attempts)} ({parts}: not counted as {'a retry' if total == 1 else 'retries'})"


def controller_alive(state: CampaignState) -> bool | None:
    """Whether the state's controller process still runs; None when it ran on another machine."""
    if state.controller.host != socket.gethostname():
        return None
    try:
        os.kill(state.controller.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unit_status(state: CampaignState, unit: Unit, alive: bool | None = True) -> str:
    """A unit's last state as the reader should see it: a unit still `running` in
    a campaign whose controller stopped (or is gone) was interrupted there."""
    if unit.status == "running" and (state.status != "running" or alive is False):
        return "interrupted"
    return unit.status


def unit_row(unit: Unit, status: str | None = None) -> list[str]:
    last = unit.last
    return [unit.label, status or unit.status, _attempts(unit), last.run_id if last else "", _cause(last)]


def state_table(state: CampaignState, title: str | None = None, alive: bool | None = True) -> Table:
    table = Table(title=title or f"campaign {state.name} {state.stamp}: {state.status}")
    for column in ("job", "status", "attempts", "run", "last failure"):
        table.add_column(column, overflow="fold")
    for unit in state.units:
        status = unit_status(state, unit, alive)
        table.add_row(*unit_row(unit, status), style=_STYLES.get(status))
    return table


def controller_line(state: CampaignState, alive: bool | None) -> str:
    """Who runs the campaign, or that nobody does any more."""
    who = f"controller {state.controller.host} pid {state.controller.pid}"
    if state.status == "finished":
        return f"{who} (finished)"
    if state.status == "interrupted":
        return f"{who} (stopped); `campaign run SUITE --resume` continues"
    if alive is False:
        return f"{who} is gone (killed or rebooted); `campaign run SUITE --resume` continues"
    return who + (" (running)" if alive else " (on another machine)")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def counts_line(state: CampaignState, elapsed_s: float) -> str:
    interrupted = state.count("interrupted")
    return (f"{state.count('success')} ok, {state.count('failed')} failed, {state.count('running')} running, "
            + (f"{interrupted} interrupted, " if interrupted else "")
            + f"{state.count('waiting')} waiting; {duration(elapsed_s)} elapsed")


def running_line(attempt: Attempt, progress: RunProgress | None, now: dt.datetime) -> str:
    """The running attempt: its throughput, step and elapsed time."""
    parts: list[str] = []
    step = progress[1] if progress is not None and progress[0] == attempt.run_id else None
    if step is None:
        parts.append("no step yet")
    else:
        if step.samples_per_s is not None:
            parts.append(f"{step.samples_per_s:,.1f} samples/s")
        if step.step is not None:
            parts.append(f"epoch {step.epoch} step {step.step}" if step.epoch is not None else f"step {step.step}")
    try:
        started = dt.datetime.fromisoformat(attempt.started_at)
        parts.append(f"{duration((now - started).total_seconds())} elapsed")
    except (TypeError, ValueError):
        pass
    return " · ".join(parts)


def live_layout(state: CampaignState, progress: RunProgress | None, elapsed_s: float,
                now: dt.datetime | None = None) -> RenderableType:
    """The live display: one row per job and repeat, then the counts."""
    now = now or dt.datetime.now(dt.timezone.utc)
    table = Table(title=f"campaign {state.name} {state.stamp}", title_justify="left")
    for column in ("job", "status", "attempts", "run", "progress / last failure"):
        table.add_column(column, overflow="fold")
    for unit in state.units:
        last = unit.last
        detail = (running_line(last, progress, now) if unit.status == "running" and last is not None
                  and last.status == "running" else _cause(last))
        table.add_row(unit.label, unit.status, _attempts(unit), last.run_id if last else "", detail,
                      style=_STYLES.get(unit.status))
    return Group(table, Text(counts_line(state, elapsed_s)))


class StampedLines:
    """A text stream that writes the time before every line that goes through it."""

    stamps_lines = True  # what writes through it adds no time of its own (harness/core/progress_view.py)

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._line_start = True

    def write(self, text: str) -> int:
        pieces = []
        for piece in text.splitlines(keepends=True):
            if self._line_start:
                pieces.append(time.strftime("%Y-%m-%d %H:%M:%S "))
            pieces.append(piece)
            self._line_start = piece.endswith("\n")
        self.stream.write("".join(pieces))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def stamped(console: Console) -> Console:
    """The console itself, made to stamp every line it writes when it is not a terminal (a log)."""
    if not console.is_terminal and not isinstance(console.file, StampedLines):
        console.file = cast(IO[str], StampedLines(console.file))  # write, flush and isatty are what rich uses
    return console


class CampaignView:
    def __init__(self, console: Console) -> None:
        self.console = stamped(console)
        self.terminal = console.is_terminal
        self._started = time.monotonic()
        self._state: CampaignState | None = None
        self._progress: RunProgress | None = None
        self._live: Live | None = None

    def event(self, message: str, style: str | None = None) -> None:
        if self.terminal:
            self.console.print(Text(f"campaign: {message}", style=style or "bold"), soft_wrap=True)
        else:  # the console stamps the line
            self.console.print(Text(f"campaign: {message}"), soft_wrap=True, highlight=False)

    def transition(self, state: CampaignState, message: str, style: str | None = None) -> None:
        """A job changed state: the line, and on a terminal the live job list."""
        elapsed = time.monotonic() - self._started
        counts = (f"{state.count('success')} ok, {state.count('failed')} failed, "
                  f"{state.count('waiting')} waiting; {elapsed / 60:.1f} min")
        self.event(f"{message} [{counts}]", style)
        if self.terminal:
            self._state = state
            self._show()

    def progress(self, step: StepProgress) -> None:
        """The running job's latest step (run_job's ``on_progress``)."""
        running = next((u.last for u in self._state.units if u.status == "running" and u.last is not None
                        and u.last.status == "running"), None) if self._state is not None else None
        if running is not None:
            self._progress = (running.run_id, step)
            if self._live is not None:
                self._live.refresh()

    def close(self) -> None:
        """Stop the live display, leaving its last picture on the screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self) -> RenderableType:
        if self._state is None:
            return Text("")
        return live_layout(self._state, self._progress, time.monotonic() - self._started)

    def _show(self) -> None:
        if self._live is None:
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=REFRESH_PER_S)
            self._live.start(refresh=True)
        else:
            self._live.refresh()
