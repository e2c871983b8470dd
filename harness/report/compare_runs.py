"""`python -m harness compare A B`: two runs, or two campaigns, side by side per
job (case, vendor, config, fix_hp) and metric, with the ratio B/A and whether it
is beyond noise.

A and B are each a results.json, a folder holding results.json files (a run's
folder, results/<run_id>) or a campaign folder (results/campaigns/<name>/<stamp>,
each unit's last attempt). A side with several successful runs of a job shows
their median. The noise band of a job's metric comes from, in order:

1. the history database beside the results (harness/report/history.py): the
   median and MAD of the job's last N successful runs, B's own runs left out;
2. the repeats: each run's deviation from its side's median, pooled over the
   sides with two runs or more;
3. neither: "no noise figure", and the ratio is shown unjudged.

With fewer than the rule's minimum (3) figures a source gives no band. mfu is
flops x p_core / peak, so it carries p_core's relative band; energy per 1,000
samples has no history column and is judged on repeats only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from harness.campaign.state import STATE_FILE, StateStore
from harness.core.results import RunResult
from harness.errors import UserError
from harness.report import history
from harness.report.load import history_file_of
from harness.report.noise import NoiseRule, band, relative_band

METRICS = ("p_core", "p_train", "p_whole", "acc", "mfu", "j_per_1k")
HISTORY_COLUMNS = {"p_core": "p_core", "p_train": "p_train", "p_whole": "p_whole", "acc": "acc", "mfu": "p_core"}
EXPECTED = ("a results.json, a run folder holding results.json files (results/<run_id>) or a campaign folder "
            "(results/campaigns/<name>/<stamp>, with state.json)")
JobKey = tuple[str, str, str, str]  # case, vendor, config, fix_hp


@dataclass(frozen=True)
class Sourced:
    path: Path  # its results.json
    result: RunResult


@dataclass
class Side:
    label: str  # what the user gave
    runs: list[Sourced]

    def by_job(self) -> dict[JobKey, list[Sourced]]:
        found: dict[JobKey, list[Sourced]] = {}
        for run in self.runs:
            r = run.result
            found.setdefault((r.case, r.vendor, r.config_name, r.fix_hp), []).append(run)
        return found


@dataclass(frozen=True)
class Row:
    job: str
    metric: str
    a: float | None
    b: float | None
    ratio: float | None  # b / a
    band: float | None  # the band's relative half-width
    band_source: str  # "history (n=5)", "repeats (n=6)", "no noise figure"
    verdict: str  # beyond noise (lower|higher), within noise, no noise figure, only in A/B, /


@dataclass
class Comparison:
    a: Side
    b: Side
    rule: NoiseRule
    rows: list[Row] = field(default_factory=list)


def _read(path: Path) -> RunResult:
    try:
        return RunResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError) as exc:
        raise UserError(f"not a results.json written by this harness ({type(exc).__name__}); expected {EXPECTED}",
                        file=str(path)) from exc


def load_side(path: Path) -> Side:
    """Every run a path stands for; UserError naming the path and what was expected."""
    if not path.exists():
        raise UserError(f"no such file or folder; expected {EXPECTED}", file=str(path))
    if path.is_file():
        return Side(str(path), [Sourced(path, _read(path))])
    if (path / STATE_FILE).is_file():
        state = StateStore(path).load()
        files = [Path(u.last.results_json) for u in state.units if u.last is not None and u.last.results_json]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise UserError(f"campaign {state.name} names {missing[0]}, which is gone", file=str(path))
        if not files:
            raise UserError(f"campaign {state.name} has no recorded run yet; expected {EXPECTED}", file=str(path))
        return Side(str(path), [Sourced(f, _read(f)) for f in files])
    files = sorted(path.rglob("results.json"))
    if not files:
        raise UserError(f"no results.json in this folder; expected {EXPECTED}", file=str(path))
    return Side(str(path), [Sourced(f, _read(f)) for f in files])


def metric_values(result: RunResult) -> dict[str, float | None]:
    metrics, efficiency, energy = result.metrics, result.efficiency, result.energy
    return {
        "p_core": metrics.p_core if metrics else None,
        "p_train": metrics.p_train if metrics else None,
        "p_whole": metrics.p_whole if metrics else None,
        "acc": metrics.acc if metrics else None,
        "mfu": efficiency.mfu if efficiency else None,
        "j_per_1k": energy.j_per_1k_samples if energy else None,
    }


def _values(runs: list[Sourced], metric: str) -> list[float]:
    return [v for run in runs if run.result.status == "success" and (v := metric_values(run.result)[metric]) is not None]


def _history_band(metric: str, a: list[Sourced], b: list[Sourced], rule: NoiseRule) -> tuple[float, str] | None:
    column = HISTORY_COLUMNS.get(metric)
    ours = [run for run in b + a if run.result.status == "success"]
    if column is None or not ours:
        return None
    database = next((found for run in ours if (found := history_file_of(run.path)) is not None), None)
    if database is None:
        return None
    latest = ours[0].result
    key = {"case": latest.case, "vendor": latest.vendor, "accelerator": latest.accelerator,
           "config": latest.config_name, "precision": latest.precision, "fix_hp": latest.fix_hp}
    left_out = {run.result.run_id for run in b}
    rows = [row for row in history.baseline(database, key, "", "9999", rule.runs + len(left_out))
            if row.run_id not in left_out][:rule.runs]
    values = [v for row in rows if (v := getattr(row, column)) is not None]
    spread = band(values, rule)
    if spread is None or spread.n < rule.min_runs:
        return None
    return spread.half_width, f"history (n={spread.n})"


def _repeats_band(metric: str, a: list[Sourced], b: list[Sourced], rule: NoiseRule) -> tuple[float, str] | None:
    deviations: list[float] = []
    for runs in (a, b):
        values = _values(runs, metric)
        median = statistics.median(values) if len(values) >= 2 else 0.0
        if median:
            deviations += [v / median - 1.0 for v in values]
    if len(deviations) < rule.min_runs:
        return None
    return relative_band(deviations, rule), f"repeats (n={len(deviations)})"


def _row(job: str, metric: str, a: list[Sourced], b: list[Sourced], rule: NoiseRule) -> Row | None:
    a_values, b_values = _values(a, metric), _values(b, metric)
    if not a_values and not b_values:
        return None
    a_mid = statistics.median(a_values) if a_values else None
    b_mid = statistics.median(b_values) if b_values else None
    if a_mid is None or b_mid is None or not a_mid:
        verdict = "only in B" if a_mid is None else ("only in A" if b_mid is None else "/")
        return Row(job, metric, a_mid, b_mid, None, None, "", verdict)
    ratio = b_mid / a_mid
    found = _history_band(metric, a, b, rule) or _repeats_band(metric, a, b, rule)
    if found is None:
        return Row(job, metric, a_mid, b_mid, ratio, None, "no noise figure", "no noise figure")
    half_width, source = found
    if abs(ratio - 1.0) <= half_width:
        verdict = "within noise"
    else:
        verdict = f"beyond noise ({'lower' if ratio < 1 else 'higher'})"
    return Row(job, metric, a_mid, b_mid, ratio, half_width, source, verdict)


def _job_label(key: JobKey) -> str:
    case, vendor, config, fix_hp = key
    return f"{case} · {vendor} · {config}" + (f" · {fix_hp}" if fix_hp not in ("", "/") else "")


def compare(a: Side, b: Side, rule: NoiseRule | None = None) -> Comparison:
    rule = rule or NoiseRule()
    comparison = Comparison(a, b, rule)
    a_jobs, b_jobs = a.by_job(), b.by_job()
    for key in [*a_jobs, *(k for k in b_jobs if k not in a_jobs)]:
        runs_a, runs_b = a_jobs.get(key, []), b_jobs.get(key, [])
        rows = [row for metric in METRICS if (row := _row(_job_label(key), metric, runs_a, runs_b, rule))]
        if not rows:  # no successful run on either side
            failed = "A" if runs_a else "B"
            rows = [Row(_job_label(key), "status", None, None, None, None, "", f"no successful run in {failed}")]
        comparison.rows += rows
    return comparison
