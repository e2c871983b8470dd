"""Every finished run in one SQLite file beside the results, and the check that
tells the morning reader when a number fell beyond its noise: a run is compared
with the median and the spread (MAD) of the last successful runs of the same
case, vendor, accelerator, config, precision and fix_hp (harness/report/noise.py)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from harness.core.results import FailureKind, RunResult, RunStatus
from harness.faults.codes import Fault
from harness.report.noise import NoiseRule, RunCheck, check_run

HISTORY_FILE = "history.sqlite"
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
# Columns added after the first release, for databases made before them. `faults`:
# the run's fault codes per host as a JSON list of Fault (NULL in rows made before it).
_ADDED_COLUMNS = {"failure_kind": "TEXT", "faults": "TEXT"}
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
    failure_kind: FailureKind | None = None


_ROW_COLUMNS = ("run_id, finished_at, case_name, vendor, accelerator, config, precision, fix_hp, status, "
                "p_core, p_train, p_whole, acc, failure_kind")


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
        "faults": json.dumps([fault.model_dump() for fault in result.faults]),
    }
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    with _connect(path) as connection:
        connection.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", values)
    connection.close()


def runs(path: Path, case: str | None = None, vendor: str | None = None, limit: int = 50,
         status: RunStatus | None = None, kind: FailureKind | None = None,
         since: str | None = None) -> list[HistoryRow]:
    """The newest runs first, optionally of one case, vendor, status and/or failure
    kind, finished at or after `since` (an ISO timestamp in UTC, as finished_at is)."""
    if not path.is_file():
        return []
    query = (f"SELECT {_ROW_COLUMNS} FROM runs WHERE (:case IS NULL OR case_name = :case) "
             "AND (:vendor IS NULL OR vendor = :vendor) AND (:status IS NULL OR status = :status) "
             "AND (:kind IS NULL OR failure_kind = :kind) AND (:since IS NULL OR finished_at >= :since) "
             "ORDER BY finished_at DESC, run_id DESC LIMIT :limit")
    with _connect(path) as connection:
        rows = connection.execute(query, {"case": case, "vendor": vendor, "status": status, "kind": kind,
                                          "since": since, "limit": limit}).fetchall()
    connection.close()
    return [HistoryRow(*row) for row in rows]


def faults(path: Path, host: str | None = None, since: str | None = None) -> list[Fault]:
    """The fault codes recorded with runs (of one host; in runs finished at or after
    the ISO time `since`), oldest run first; rows made before the column have none."""
    if not path.is_file():
        return []
    query = ("SELECT faults FROM runs WHERE faults IS NOT NULL AND (:since IS NULL OR finished_at >= :since) "
             "ORDER BY finished_at, run_id")
    with _connect(path) as connection:
        rows = connection.execute(query, {"since": since}).fetchall()
    connection.close()
    found = [Fault.model_validate(entry) for (text,) in rows for entry in json.loads(text)]
    return [fault for fault in found if host is None or fault.host == host]


def _job_key(case: str, vendor: str, accelerator: str, config: str, precision: str, fix_hp: str) -> dict[str, str]:
    """What makes runs comparable: the history's job key, as baseline() queries it."""
    return {"case": case, "vendor": vendor, "accelerator": accelerator, "config": config,
            "precision": precision, "fix_hp": fix_hp}


def baseline(path: Path, key: dict[str, str], run_id: str, finished_at: str, window: int) -> list[HistoryRow]:
    """The last `window` successful runs of the job `key` (case, vendor, accelerator,
    config, precision, fix_hp) that finished by `finished_at`, `run_id` excluded, newest first."""
    if not path.is_file():
        return []
    query = (f"SELECT {_ROW_COLUMNS} FROM runs WHERE status = 'success' AND run_id != :run_id "
             "AND case_name = :case AND vendor = :vendor AND accelerator = :accelerator AND config = :config "
             "AND precision = :precision AND fix_hp = :fix_hp AND finished_at <= :finished_at "
             "ORDER BY finished_at DESC, run_id DESC LIMIT :window")
    with _connect(path) as connection:
        rows = connection.execute(query, {**key, "run_id": run_id, "finished_at": finished_at,
                                          "window": window}).fetchall()
    connection.close()
    return [HistoryRow(*row) for row in rows]


def check_values(path: Path, key: dict[str, str], run_id: str, finished_at: str,
                 values: dict[str, float | None], rule: NoiseRule) -> RunCheck | None:
    """The figures of one run (THROUGHPUTS, p_core first) against its comparable history."""
    rows = baseline(path, key, run_id, finished_at, rule.runs)
    history = {column: [v for row in rows if (v := getattr(row, column)) is not None] for column in values}
    return check_run(run_id, values, history, [row.run_id for row in rows], rule)


def check(path: Path, result: RunResult, rule: NoiseRule | None = None) -> RunCheck | None:
    """A successful run's throughputs against the median and noise of its last
    `rule.runs` comparable successful runs (the run itself excluded): one RunCheck,
    whose describe() is one line; None for a failed run or one without figures."""
    if result.status != "success" or result.metrics is None:
        return None
    values = {column: getattr(result.metrics, column) for column in THROUGHPUTS}
    key = _job_key(result.case, result.vendor, result.accelerator, result.config_name, result.precision,
                   result.fix_hp)
    return check_values(path, key, result.run_id, result.finished_at, values, rule or NoiseRule())


def check_row(path: Path, row: HistoryRow, rule: NoiseRule | None = None) -> RunCheck | None:
    """A recorded run against the runs recorded before it (`history`'s column)."""
    if row.status != "success":
        return None
    key = _job_key(row.case, row.vendor, row.accelerator, row.config, row.precision, row.fix_hp)
    values = {column: getattr(row, column) for column in THROUGHPUTS}
    return check_values(path, key, row.run_id, row.finished_at, values, rule or NoiseRule())


def regressions(path: Path, result: RunResult, rule: NoiseRule | None = None) -> list[RunCheck]:
    """The run's check when it is a regression beyond noise (a list of one), else []."""
    found = check(path, result, rule)
    return [found] if found is not None and found.regression else []
