"""The morning report of a campaign: summary.md and summary.html in its folder.

One row per suite job: status, attempts (per repeat), failure kind and cause,
the metrics with their spread over repeats (harness/campaign/stats.py), the
ratio against the previous campaign of the same name and against the job's
`reference` page row, and regressions flagged against the history; the
all-reduce table (peak bus bandwidth, % of expected) for bandwidth jobs; the
node table and the pairwise searches for the bad node (nodetable.py). Plots (plots.py) are embedded
in the HTML as data URIs and written to plots/ beside the markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from pydantic import ValidationError

from harness.campaign.check import PlannedEntry
from harness.campaign.nodetable import COLUMNS as NODE_COLUMNS
from harness.campaign.nodetable import NodeRow, bisection_markdown, node_rows, node_table_markdown
from harness.campaign.plots import Plot, monitor_plot, nights_plot, repeats_plot, step_time_plot
from harness.campaign.state import CampaignState, StateStore, Unit, UnitStatus, folders
from harness.campaign.stats import Spread, spread
from harness.core.record import write_atomic
from harness.core.results import RunResult
from harness.errors import HarnessError
from harness.expect import text as efficiency_text
from harness.faults.quarantine import QuarantineStore
from harness.pages.compare import compare
from harness.report import history
from harness.report.noise import NoiseRule

COLUMNS = ("p_core", "p_train", "p_whole", "e2e_time")
JobKey = tuple[str, str, str, str, str]

_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                                autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                lstrip_blocks=True)


@dataclass(frozen=True)
class BusbwRow:
    """One successful run of a bandwidth case (cases/allreduce)."""

    run_id: str
    ranks: int
    peak_gbps: float | None
    avg_gbps: float | None
    of_expected: float | None
    expected_note: str  # what it was compared with, or why it was not

    def cells(self) -> list[str]:
        def gbps(value: float | None) -> str:
            return "/" if value is None else f"{value:.3g}"

        share = "/" if self.of_expected is None else f"{self.of_expected:.0%}"
        return [self.run_id, str(self.ranks), gbps(self.peak_gbps), gbps(self.avg_gbps), share, self.expected_note]


BUSBW_COLUMNS = ("run", "ranks", "peak busbw GB/s", "avg busbw GB/s", "% of expected", "expected")


def busbw_row(result: RunResult) -> BusbwRow | None:
    if result.bandwidth is None:
        return None
    found = result.efficiency
    note = ""
    if found is not None:
        note = (f"{found.expected:.3g} GB/s ({found.expected_source})" if found.expected is not None
                else found.expected_missing)
    return BusbwRow(run_id=result.run_id, ranks=result.bandwidth.world_size,
                    peak_gbps=result.bandwidth.peak_busbw_gbps, avg_gbps=result.bandwidth.avg_busbw_gbps,
                    of_expected=found.of_expected if found is not None else None, expected_note=note or "/")


def attempts_text(units: list[Unit]) -> str:
    """The attempts of a job: the count, or one count per repeat."""
    if len(units) == 1:
        return str(len(units[0].attempts))
    return ", ".join(str(len(unit.attempts)) for unit in units) + " (per repeat)"


@dataclass
class JobSummary:
    number: int
    label: str
    status: UnitStatus
    attempts: str  # "2", or "1, 1 (per repeat)"
    runs: list[str]
    failures: list[str] = field(default_factory=list)  # "kind: cause" of each failed repeat
    spreads: dict[str, Spread | None] = field(default_factory=dict)
    acc: float | None = None
    mem_gib: float | None = None
    vs_previous: float | None = None  # median p_core / the previous campaign's
    previous: str | None = None  # that campaign's folder name
    vs_page: dict[str, float | None] = field(default_factory=dict)
    page_note: str | None = None
    regressions: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    # One line per node of each unit's last attempt: ok, slow (stragglers), input-bound, hung, lost.
    nodes: list[str] = field(default_factory=list)
    # MFU, % of expected and J/1k of the representative run, with the lines that say what they divided by.
    efficiency: list[str] = field(default_factory=lambda: [efficiency_text.EMPTY] * len(efficiency_text.COLUMNS))
    efficiency_notes: list[str] = field(default_factory=list)
    busbw: list[BusbwRow] = field(default_factory=list)  # bandwidth cases: each successful run

    def cell(self, column: str) -> str:
        found = self.spreads.get(column)
        if found is None:
            return "/"
        text = f"{found.median:,.1f}" if column != "e2e_time" else f"{found.median:,.0f}"
        return text + (f" ±{found.cv:.1%}" if found.cv is not None else "")

    @property
    def failure_text(self) -> str:
        return "; ".join(self.failures)


def _key(unit: Unit) -> JobKey:
    return unit.case, unit.vendor, unit.accelerator, unit.config, unit.fix_hp or ""


def _load(attempt_json: str | None) -> RunResult | None:
    if not attempt_json or not Path(attempt_json).is_file():
        return None
    try:
        return RunResult.model_validate_json(Path(attempt_json).read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return None


def _successes(units: list[Unit]) -> list[RunResult]:
    found = []
    for unit in units:
        for attempt in unit.attempts:
            if attempt.status == "success" and (result := _load(attempt.results_json)) is not None:
                found.append(result)
    return found


def _node_lines(units: list[Unit]) -> list[str]:
    lines = []
    for unit in units:
        last = unit.last
        result = _load(last.results_json) if last is not None else None
        if result is not None:
            lines += [f"{result.run_id}: {verdict.line()}" for verdict in result.node_verdicts]
    return lines


def _status(units: list[Unit]) -> UnitStatus:
    states = {unit.status for unit in units}
    order: tuple[UnitStatus, ...] = ("failed", "running", "interrupted", "waiting")
    for status in order:
        if status in states:
            return status
    return "success"


def _median_p_core(results: list[RunResult]) -> float | None:
    found = spread([r.metrics.p_core if r.metrics else None for r in results])
    return found.median if found else None


def _previous(state: CampaignState, folder: Path, results: Path) -> tuple[str, dict[JobKey, list[RunResult]]] | None:
    """The previous campaign of the same name (started before this one): its successful runs by job."""
    earlier = [f for f in folders(results, state.name) if f.name < folder.name]
    for candidate in reversed(earlier):
        try:
            previous = StateStore(candidate).load()
        except HarnessError:
            continue
        by_job: dict[JobKey, list[RunResult]] = {}
        for unit in previous.units:
            by_job.setdefault(_key(unit), []).extend(_successes([unit]))
        return candidate.name, by_job
    return None


def _representative(results: list[RunResult]) -> RunResult | None:
    """The run whose p_core is nearest the median (the last run when none has one)."""
    if not results:
        return None
    median = _median_p_core(results)
    if median is None:
        return results[-1]
    return min(results, key=lambda r: abs((r.metrics.p_core or 0.0) - median) if r.metrics else float("inf"))


def _history_points(history_file: Path, units: list[Unit], ours: set[str]) -> list[tuple[str, float, bool]]:
    unit = units[0]
    rows = history.runs(history_file, unit.case, unit.vendor, limit=500)
    wanted = [r for r in rows if r.status == "success" and r.p_core is not None and r.accelerator == unit.accelerator
              and r.config == unit.config and r.fix_hp == (unit.fix_hp or "/")]
    return [(r.finished_at, float(r.p_core or 0.0), r.run_id in ours) for r in reversed(wanted)]


def summarise_job(number: int, units: list[Unit], planned: PlannedEntry | None, results_root: Path,
                  previous: tuple[str, dict[JobKey, list[RunResult]]] | None,
                  rule: NoiseRule | None = None) -> JobSummary:
    successes = _successes(units)
    summary = JobSummary(number=number, label=units[0].label.split(": ", 1)[1], status=_status(units),
                         attempts=attempts_text(units),
                         runs=[a.run_id for u in units for a in u.attempts])
    for unit in units:
        last = unit.last
        if unit.status == "failed" and last is not None:
            cause = (last.failure or "").strip().splitlines()
            summary.failures.append(f"{last.failure_kind or 'failed'}: {cause[0] if cause else 'unknown'}")
    summary.nodes = _node_lines(units)
    summary.busbw = [row for row in (busbw_row(r) for r in successes) if row is not None]
    summary.spreads = {c: spread([getattr(r.metrics, c) if r.metrics else None for r in successes]) for c in COLUMNS}
    best = _representative(successes)
    if best is not None and best.metrics is not None:
        summary.acc, summary.mem_gib = best.metrics.acc, best.metrics.mem_used_gib
    if best is not None:
        summary.efficiency = efficiency_text.cells(best)
        summary.efficiency_notes = [f"{best.run_id}: {line}" for line in efficiency_text.notes(best)]
    ours = _median_p_core(successes)
    if previous is not None:
        theirs = _median_p_core(previous[1].get(_key(units[0]), []))
        summary.previous = previous[0]
        if ours is not None and theirs:
            summary.vs_previous = ours / theirs
    if planned is not None and planned.page is not None and best is not None:
        comparison = compare(best, planned.page, str(planned.entry.reference))
        summary.vs_page = {row.column: row.ratio for row in comparison.rows if row.column in COLUMNS}
        summary.page_note = "; ".join(comparison.notes) or f"vs {comparison.page_row} of {comparison.page}"
    history_file = results_root / history.HISTORY_FILE
    for result in successes:
        summary.regressions += [f"{result.run_id}: {r.describe()}" for r in history.regressions(history_file, result, rule)]
    stem = f"job{number}"
    title = summary.label
    run_ids = {r.run_id for r in successes}
    plots = [repeats_plot(f"{stem}-p_core-repeats", f"{title}: p_core per repeat",
                          [(r.run_id, r.metrics.p_core) for r in successes if r.metrics and r.metrics.p_core]),
             nights_plot(f"{stem}-p_core-nights", f"{title}: p_core over past runs",
                         _history_points(history_file, units, run_ids))]
    if best is not None:
        run_dir = results_root / best.run_id / best.case / best.config_name
        plots.append(step_time_plot(f"{stem}-step-time", f"{title}: step time ({best.run_id})", run_dir))
        plots.append(monitor_plot(f"{stem}-monitor", f"{title} ({best.run_id})",
                                  [Path(n.log_dir) / "monitor.csv" for n in best.nodes]))
    summary.plots = [p for p in plots if p is not None]
    return summary


def _ratio(value: float | None) -> str:
    return "/" if value is None else f"{value:.2f}"


def summary_markdown(state: CampaignState, jobs: list[JobSummary], nodes: list[NodeRow] | None = None) -> str:
    ok = sum(1 for j in jobs if j.status == "success")
    lines = [f"# Campaign {state.name} {state.stamp}", "",
             f"{state.status}: {ok} of {len(jobs)} job(s) succeeded · started {state.started_at}"
             + (f" · finished {state.finished_at}" if state.finished_at else ""), "",
             "| job | status | attempts | p_core | p_train | p_whole | e2e_time | "
             + " | ".join(efficiency_text.COLUMNS) + " | vs previous | vs page p_core | failure |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for job in jobs:
        cells = [f"{job.number}: {job.label}", job.status, job.attempts, *(job.cell(c) for c in COLUMNS),
                 *job.efficiency, _ratio(job.vs_previous), _ratio(job.vs_page.get("p_core")), job.failure_text or ""]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    if any(job.busbw for job in jobs):
        lines += ["", "## All-reduce", "", "| job | " + " | ".join(BUSBW_COLUMNS) + " |",
                  "| --- |" + " --- |" * len(BUSBW_COLUMNS)]
        lines += ["| " + " | ".join([f"{job.number}: {job.label}", *row.cells()]).replace("\n", " ") + " |"
                  for job in jobs for row in job.busbw]
    if nodes:
        lines += ["", "## Nodes", "", *node_table_markdown(nodes)]
    if state.bisections:
        lines += ["", "## Finding the bad node (pairwise all-reduce)", ""]
        for bisection in state.bisections:
            lines += bisection_markdown(bisection)
    for job in jobs:
        lines += ["", f"## Job {job.number}: {job.label}", "", f"- status: {job.status}, attempts: {job.attempts}",
                  f"- runs: {', '.join(job.runs) or 'none'}"]
        lines += [f"- {c}: {s.describe()}" for c, s in job.spreads.items() if s is not None]
        lines += [f"- {line}" for line in job.efficiency_notes]
        if job.previous:
            lines.append(f"- vs previous campaign {job.previous}: p_core x{_ratio(job.vs_previous)}")
        if job.page_note:
            ratios = ", ".join(f"{c} x{_ratio(v)}" for c, v in job.vs_page.items())
            lines.append(f"- vs reference page: {ratios} ({job.page_note})")
        lines += [f"- failure: {failure}" for failure in job.failures]
        lines += [f"- **regression**: {r}" for r in job.regressions]
        lines += [f"- node: {line}" for line in job.nodes]
        lines += [f"\n![{p.title}](plots/{p.file_name})" for p in job.plots]
    return "\n".join(lines) + "\n"


def write_summary(state: CampaignState, folder: Path, planned: list[PlannedEntry], results_root: Path,
                  rule: NoiseRule | None = None) -> Path:
    """summary.md, summary.html and plots/ in the campaign folder; the markdown's path."""
    by_job: dict[int, list[Unit]] = {}
    for unit in state.units:
        by_job.setdefault(unit.job, []).append(unit)
    planned_by_index = {p.entry.index: p for p in planned}
    previous = _previous(state, folder, results_root)
    jobs = [summarise_job(index + 1, units, planned_by_index.get(index), results_root, previous, rule)
            for index, units in sorted(by_job.items())]
    for job in jobs:
        for plot in job.plots:
            (folder / "plots").mkdir(parents=True, exist_ok=True)
            (folder / "plots" / plot.file_name).write_bytes(plot.png)
    try:
        listed = QuarantineStore(results_root).load().active_hosts()
    except HarnessError:  # an unreadable list: the table shows this campaign's own entries
        listed = {}
    nodes = node_rows(state, _load, listed)
    write_atomic(folder / "summary.md", summary_markdown(state, jobs, nodes))
    html = _TEMPLATES.get_template("summary.html.j2").render(
        state=state, jobs=jobs, columns=COLUMNS, ratio=_ratio, efficiency_columns=efficiency_text.COLUMNS,
        busbw_columns=BUSBW_COLUMNS, nodes=nodes, node_columns=NODE_COLUMNS,
        bisections=[bisection_markdown(b) for b in state.bisections])
    write_atomic(folder / "summary.html", html)
    return folder / "summary.md"
