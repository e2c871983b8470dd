"""Every finished run in one SQLite file beside the results, and the check that
tells the morning reader when a number fell: a run is compared with the median
of the last successful runs of the same case, vendor, accelerator, config,
precision and fix_hp."""

from __future__ import annotations

import sqlite3
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.core.results import RunResult, RunStatus

HISTORY_FILE = "history.sqlite"
# A throughput this far below the baseline median is reported as a regression.
REGRESSION_FRACTION = 0.05
BASELINE_RUNS = 5
THROUGHPUTS = ("p_core", "p_train", "p_whole")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    finished_at TEXT NOT NULL,
    case_name TEXT NOT NULL,
    vendor TEXT NOT NULL,
    accelerator TEXT NOT NULL,
    config TEXT NOT NULL,
    precision TEXT NOT NULL,
    fix_hp TEXT NOT NULL,
    status TEXT NOT NULL,
    e2e_time REAL, p_whole REAL, p_train REAL, p_core REAL, acc REAL,
    mem_used_gib REAL, mem_total_gib REAL,
    image TEXT NOT NULL,
    results_json TEXT NOT NULL,
    failure_kind TEXT
)
"""
# Columns added after the first release, for databases made before them.
_ADDED_COLUMNS = {"failure_kind": "TEXT"}
BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HistoryRow:
    run_id: str
    finished_at: str
    case: str
    vendor: str
    accelerator: str
    config: str
    precision: str
    fix_hp: str
    status: RunStatus
    p_core: float | None
    p_train: float | None
    p_whole: float | None
    acc: float | None


@dataclass(frozen=True)
class Regression:
    column: str
    value: float
    baseline: float  # median of the baseline runs
    baseline_runs: list[str]

    @property
    def change(self) -> float:
        return self.value / self.baseline - 1.0

    def describe(self) -> str:
        return (f"{self.column} {self.value:,.1f} is {-self.change:.1%} below the median {self.baseline:,.1f} "
                f"of {len(self.baseline_runs)} earlier run(s): {', '.join(self.baseline_runs)}")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # WAL + a busy timeout: a campaign and a `history` reader may open it at once.
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(_SCHEMA)
    have = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in have:
            connection.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
    return connection


def record(path: Path, result: RunResult, results_json: Path) -> None:
    metrics = result.metrics
    values = {
        "run_id": result.run_id, "finished_at": result.finished_at, "case_name": result.case,
        "vendor": result.vendor, "accelerator": result.accelerator, "config": result.config_name,
        "precision": result.precision, "fix_hp": result.fix_hp, "status": result.status,
        "e2e_time": metrics.e2e_time if metrics else None, "p_whole": metrics.p_whole if metrics else None,
        "p_train": metrics.p_train if metrics else None, "p_core": metrics.p_core if metrics else None,
        "acc": metrics.acc if metrics else None, "mem_used_gib": metrics.mem_used_gib if metrics else None,
        "mem_total_gib": metrics.mem_total_gib if metrics else None, "image": result.image,
        "results_json": str(results_json), "failure_kind": result.failure_kind,
    }
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    with _connect(path) as connection:
        connection.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", values)
    connection.close()


def runs(path: Path, case: str | None = None, vendor: str | None = None, limit: int = 50,
         status: RunStatus | None = None) -> list[HistoryRow]:
    """The newest runs first, optionally of one case, vendor and/or status."""
    if not path.is_file():
        return []
    query = ("SELECT run_id, finished_at, case_name, vendor, accelerator, config, precision, fix_hp, status, "
             "p_core, p_train, p_whole, acc FROM runs WHERE (:case IS NULL OR case_name = :case) "
             "AND (:vendor IS NULL OR vendor = :vendor) AND (:status IS NULL OR status = :status) "
             "ORDER BY finished_at DESC, run_id DESC LIMIT :limit")
    with _connect(path) as connection:
        rows = connection.execute(query, {"case": case, "vendor": vendor, "status": status,
                                          "limit": limit}).fetchall()
    connection.close()
    return [HistoryRow(*row) for row in rows]


def regressions(path: Path, result: RunResult, fraction: float = REGRESSION_FRACTION,
                window: int = BASELINE_RUNS) -> list[Regression]:
    """Throughputs of `result` more than `fraction` below the median of the last
    `window` successful runs with the same setup (the run itself excluded)."""
    if result.status != "success" or result.metrics is None or not path.is_file():
        return []
    query = ("SELECT run_id, p_core, p_train, p_whole FROM runs WHERE status = 'success' AND run_id != :run_id "
             "AND case_name = :case AND vendor = :vendor AND accelerator = :accelerator AND config = :config "
             "AND precision = :precision AND fix_hp = :fix_hp AND finished_at <= :finished_at "
             "ORDER BY finished_at DESC, run_id DESC LIMIT :window")
    with _connect(path) as connection:
        baseline = connection.execute(query, {
            "run_id": result.run_id, "case": result.case, "vendor": result.vendor,
            "accelerator": result.accelerator, "config": result.config_name, "precision": result.precision,
            "fix_hp": result.fix_hp, "finished_at": result.finished_at, "window": window,
        }).fetchall()
    connection.close()
    found: list[Regression] = []
    for offset, column in enumerate(THROUGHPUTS, start=1):
        value = getattr(result.metrics, column)
        earlier = [row[offset] for row in baseline if row[offset] is not None]
        if value is None or not earlier:
            continue
        median = statistics.median(earlier)
        if value < (1.0 - fraction) * median:
            found.append(Regression(column, value, median, [row[0] for row in baseline if row[offset] is not None]))
    return found
