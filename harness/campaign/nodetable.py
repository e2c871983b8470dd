"""The morning summary's node table: one row per host the campaign touched —
the jobs it ran, the failed attempts it was part of, the fault codes seen on it,
straggler flags, its quarantine (since, why, until) and the spare that took its
place; and each pairwise search for the bad node (bisect.py). Built from the campaign state and each attempt's results.json (pure
otherwise: the loader is passed in).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.campaign.state import Bisection, CampaignState
from harness.core.results import RunResult
from harness.faults.codes import code_line
from harness.faults.quarantine import QuarantineEntry

Loader = Callable[[str | None], RunResult | None]


@dataclass
class NodeRow:
    host: str
    jobs: set[tuple[int, int]] = field(default_factory=set)  # (job, repeat) that ran on it
    failures: int = 0  # failed attempts it was one of the hosts of
    codes: Counter[str] = field(default_factory=Counter)
    straggler_runs: set[str] = field(default_factory=set)
    quarantine: QuarantineEntry | None = None
    replaced_by: dict[str, str] = field(default_factory=dict)  # run id -> the spare in its place
    stood_in_for: dict[str, str] = field(default_factory=dict)  # run id -> the host it replaced (a spare)

    def cells(self) -> list[str]:
        codes = ", ".join(f"{code} ×{count}" if count > 1 else code for code, count in sorted(self.codes.items()))
        quarantine = "/"
        if self.quarantine is not None:
            entry = self.quarantine
            until = entry.until or "released by hand"
            quarantine = f"since {entry.since}: {entry.reason} ({', '.join(entry.codes) or 'by hand'}), until {until}"
        replaced = _grouped(self.replaced_by, "{}")
        stood_in = _grouped(self.stood_in_for, "spare for {}")
        return [self.host, str(len(self.jobs)), str(self.failures), codes or "/",
                str(len(self.straggler_runs)) if self.straggler_runs else "/", quarantine,
                "; ".join(part for part in (replaced, stood_in) if part) or "/"]


def _grouped(by_run: dict[str, str], words: str) -> str:
    """One part per host: with its run when once ("node9 (j1-a1)"), else how many attempts."""
    runs: dict[str, list[str]] = {}
    for run, host in by_run.items():
        runs.setdefault(host, []).append(run)
    return "; ".join(words.format(host) + (f" ({found[0]})" if len(found) == 1 else f" ({len(found)} attempts)")
                     for host, found in runs.items())


COLUMNS = ("host", "jobs run", "failures", "codes seen", "straggler flags", "quarantined", "replaced by")


def node_rows(state: CampaignState, load: Loader, listed: dict[str, QuarantineEntry] | None = None) -> list[NodeRow]:
    """One row per host, in the order the campaign first met them. ``listed``: the
    quarantine list's active entries, shown for a host this campaign did not quarantine."""
    rows: dict[str, NodeRow] = {}

    def row(host: str) -> NodeRow:
        return rows.setdefault(host, NodeRow(host=host))

    for unit in state.units:
        for host in unit.hosts:
            row(host)
        for attempt in unit.attempts:
            for fault in attempt.faults:
                row(fault.host).codes[fault.code] += 1
                if fault.code == "BENCH-S01":
                    row(fault.host).straggler_runs.add(fault.run_id)
            for gone, spare in attempt.replaced.items():
                row(gone).replaced_by[attempt.run_id] = spare
                row(spare).stood_in_for[attempt.run_id] = gone
            if attempt.no_spare or attempt.status == "running":
                continue  # nothing ran (skipped), or not over yet
            hosts = attempt.hosts or unit.hosts
            for host in hosts:
                row(host).jobs.add((unit.job, unit.repeat))
                if attempt.status == "failed":
                    row(host).failures += 1
            result = load(attempt.results_json)
            for straggler in result.stragglers if result is not None else []:
                row(straggler.host).straggler_runs.add(attempt.run_id)
    for bisection in state.bisections:
        for host in bisection.hosts:
            row(host)
    for entry in [*(listed or {}).values(), *state.quarantined]:  # this campaign's entries win
        if entry.host in rows or entry in state.quarantined:
            row(entry.host).quarantine = entry
    return list(rows.values())


def node_table_markdown(rows: list[NodeRow]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    for found in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in found.cells()) + " |")
    return lines


def _gbps(value: float | None) -> str:
    return "/" if value is None else f"{value:.3g}"


def bisection_markdown(bisection: Bisection) -> list[str]:
    """One search for the bad node: what started it, each pair's run and the decision."""
    bar = f" (slow: below {bisection.min_busbw_gbps:g} GB/s)" if bisection.min_busbw_gbps is not None else ""
    lines = [f"- after {bisection.run_id} on {', '.join(bisection.hosts)}{bar}: {bisection.trigger}"]
    lines += [f"  - {' + '.join(pair.hosts)}: {pair.verdict}, peak busbw {_gbps(pair.peak_busbw_gbps)} GB/s "
              f"({pair.run_id}){': ' + pair.detail if pair.verdict != 'ok' else ''}" for pair in bisection.pairs]
    named = f"**{bisection.named}** named ({code_line(bisection.code)}): " if bisection.named and bisection.code else ""
    lines.append(f"  - {named}{bisection.note}")
    return lines
