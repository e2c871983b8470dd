"""Writing down a finished run, whatever way it ended: results.json, plan.txt,
README.md, report.html and the history row.

Files are written atomically (a temporary file in the same folder, then a
rename), so a full disk or a killed controller never leaves half a results.json.
A write that fails is one clear error that says where the logs still are.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from harness.core.results import RunResult
from harness.errors import HarnessError
from harness.report import history
from harness.report.tables import report_texts


class RecordError(HarnessError):
    """The run ended but its record could not be written (disk full, permissions)."""


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def record_run(result: RunResult, plan_text: str, out_dir: Path, results_root: Path) -> None:
    """Every file of the run's record, then its history row. Raises RecordError."""
    try:
        write_atomic(out_dir / "results.json", result.model_dump_json(indent=2))
        write_atomic(out_dir / "plan.txt", plan_text)
        for name, text in report_texts([result]).items():
            write_atomic(out_dir / name, text)
        history.record(results_root / history.HISTORY_FILE, result, out_dir / "results.json")
    except (OSError, sqlite3.Error) as exc:
        raise RecordError(_record_failure(result, out_dir, exc)) from exc


def _record_failure(result: RunResult, out_dir: Path, exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    lines = [f"cannot write the record of run {result.run_id} into {out_dir}: {reason}",
             f"the run itself {'succeeded' if result.status == 'success' else 'failed'}"
             + (f" ({result.failure_kind})" if result.failure_kind else "")]
    kept = [f"{node.host}:{node.remote_run_dir}" for node in result.nodes if node.remote_run_dir and not node.collected]
    if kept:
        lines.append("logs still on the hosts: " + ", ".join(kept)
                     + f" (bring them back with `python -m harness collect {result.run_id} --hosts ...`)")
    return "\n".join(lines)
