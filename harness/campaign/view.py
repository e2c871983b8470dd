"""What a campaign shows while it runs: on a terminal, the job list (done,
running, waiting, attempts) at every transition, with the running job's own
progress (phases, live step throughput) from the runner in between; elsewhere
(the overnight log) plain timestamped lines."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.campaign.state import CampaignState, Unit

_STYLES = {"success": "green", "failed": "red", "running": "yellow", "waiting": "dim"}


def unit_row(unit: Unit) -> list[str]:
    last = unit.last
    attempts = f"{len(unit.attempts)}" + (f" ({unit.tries} counted)" if unit.tries != len(unit.attempts) else "")
    cause = ""
    if last is not None and last.status not in ("success", "running"):
        cause = f"{last.failure_kind or last.status}: {(last.failure or '').splitlines()[0] if last.failure else ''}"
    return [unit.label, unit.status, attempts, last.run_id if last else "", cause[:160]]


def state_table(state: CampaignState, title: str | None = None) -> Table:
    table = Table(title=title or f"campaign {state.name} {state.stamp}: {state.status}")
    for column in ("job", "status", "attempts", "run", "last failure"):
        table.add_column(column, overflow="fold")
    for unit in state.units:
        table.add_row(*unit_row(unit), style=_STYLES.get(unit.status))
    return table


class CampaignView:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.terminal = console.is_terminal
        self._started = time.monotonic()

    def event(self, message: str, style: str | None = None) -> None:
        if self.terminal:
            self.console.print(Text(f"campaign: {message}", style=style or "bold"), soft_wrap=True)
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self.console.print(Text(f"{stamp} campaign: {message}"), soft_wrap=True, highlight=False)

    def transition(self, state: CampaignState, message: str, style: str | None = None) -> None:
        """A job changed state: the line, and on a terminal the whole list."""
        elapsed = time.monotonic() - self._started
        counts = (f"{state.count('success')} ok, {state.count('failed')} failed, "
                  f"{state.count('waiting')} waiting; {elapsed / 60:.1f} min")
        self.event(f"{message} [{counts}]", style)
        if self.terminal:
            self.console.print(state_table(state))
