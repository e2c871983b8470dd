"""Finished runs read back from their results.json files, for `report` and
`readme`, and the regressions each shows against its own results database."""

from __future__ import annotations

from pathlib import Path

from harness.core.results import RunResult
from harness.errors import UserError
from harness.report import history
from harness.report.noise import NoiseRule, RunCheck


def results_files(paths: list[Path]) -> list[Path]:
    """Every results.json among these files and below these folders."""
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError("no such file or folder", file=str(path))
        files += sorted(path.rglob("results.json")) if path.is_dir() else [path]
    if not files:
        raise UserError("no results.json found", file=", ".join(map(str, paths)))
    return files


def load_sourced(paths: list[Path]) -> list[tuple[Path, RunResult]]:
    loaded = []
    for file in results_files(paths):
        try:
            loaded.append((file, RunResult.model_validate_json(file.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise UserError(f"not a results.json written by this harness: {exc}", file=str(file)) from exc
    return loaded


def load_results(paths: list[Path]) -> list[RunResult]:
    return [result for _, result in load_sourced(paths)]


def history_file_of(results_json: Path) -> Path | None:
    """The results database of the results folder a results.json lies in."""
    for folder in results_json.resolve().parents:
        if (folder / history.HISTORY_FILE).is_file():
            return folder / history.HISTORY_FILE
    return None


def checks_by_run(loaded: list[tuple[Path, RunResult]], rule: NoiseRule | None = None) -> dict[str, RunCheck]:
    """run id -> its check against the history beside its results (runs with no
    database, failed runs and runs without figures have none)."""
    found: dict[str, RunCheck] = {}
    for source, result in loaded:
        database = history_file_of(source)
        check = history.check(database, result, rule) if database is not None else None
        if check is not None:
            found[result.run_id] = check
    return found


def regressions_by_run(loaded: list[tuple[Path, RunResult]], rule: NoiseRule | None = None) -> dict[str, list[str]]:
    """run id -> its regression beyond noise, described on one line (a list of one)."""
    return {run_id: [check.describe()] for run_id, check in checks_by_run(loaded, rule).items() if check.regression}
