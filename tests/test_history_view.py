"""`history` as a person reads it: every cell whole (at 80 columns folded between
tokens, at 200 on one line), the failure kind in its own column, and --status
over every status and kind, with --since, --case and --vendor."""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from harness import REPO_ROOT
from harness.core.results import FailureKind, Metrics, RunResult
from harness.report.fit import tokens
from harness.report.history import HISTORY_FILE, HistoryRow, record, runs
from harness.report.history_cli import KINDS, print_history, since_text
from harness.report.noise import NoiseRule

LONG_HP = "bs=4,max_steps=30,image_size=32,num_workers=2,lr=0.001"
SHORT_HP = "bs=4,lr=0.001,image_size=32"


def _run(run_id: str, finished: str, kind: FailureKind | None = None, case: str = "resnet50",
         fix_hp: str = LONG_HP) -> RunResult:
    return RunResult(
        run_id=run_id, case=case, vendor="cpu", accelerator="cpu", nnodes=2, nproc_per_node=1, precision="fp32",
        fix_hp=fix_hp, status="success" if kind is None else "failed", failure_kind=kind, finished_at=finished,
        metrics=Metrics(p_core=123.4, p_train=120.1, p_whole=118.9, acc=None, world_size=2) if kind is None else None)


def _fill(tmp_path: Path, fix_hp: str = LONG_HP) -> Path:
    database = tmp_path / HISTORY_FILE
    results = [_run("20261206-010000-aaaaaa", "2026-12-06T01:00:00+00:00", fix_hp=fix_hp),
               _run("20261206-011000-bbbbbb", "2026-12-06T01:10:00+00:00", kind="stalled", fix_hp=fix_hp),
               _run("20261206-012000-cccccc", "2026-12-06T01:20:00+00:00", kind="interrupted", case="mobilenetv2",
                    fix_hp=fix_hp),
               _run("20261205-230000-dddddd", "2026-12-05T23:00:00+00:00", kind="timeout", fix_hp="/")]
    for result in results:
        record(database, result, tmp_path / result.run_id / "results.json")
    return database


def _render(tmp_path: Path, width: int, fix_hp: str = LONG_HP) -> tuple[str, list[HistoryRow]]:
    database = _fill(tmp_path, fix_hp)
    rows = runs(database)
    out = io.StringIO()
    print_history(Console(file=out, width=width, color_system=None), tmp_path, rows, NoiseRule())
    return out.getvalue(), rows


def _cell_values(row: HistoryRow) -> list[str]:
    return [row.run_id, row.finished_at[:10], row.finished_at[11:19], row.case, row.vendor, row.config,
            row.precision, row.fix_hp, row.status, row.failure_kind or "/"]


@pytest.mark.parametrize(("width", "fix_hp"), [(80, LONG_HP), (175, LONG_HP), (200, SHORT_HP)])
def test_no_cell_is_cut_inside_a_token(tmp_path: Path, width: int, fix_hp: str) -> None:
    text, rows = _render(tmp_path, width, fix_hp)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    # each of a cell's tokens is found whole in the output (split the way the cells are)
    words = {token for word in re.findall(r"[^\s│┃|()]+", text) for token in tokens(word)}
    for row in rows:
        for value in _cell_values(row):
            for token in tokens(value):
                assert token in words, (token, text)


def test_at_200_columns_every_run_is_one_line_with_its_kind(tmp_path: Path) -> None:
    text, rows = _render(tmp_path, 200, SHORT_HP)
    for header in ("finished (UTC)", "status", "kind", "p_core", "fix_hp", "vs history"):
        assert header in text
    for row in rows:
        [line] = [line for line in text.splitlines() if row.run_id in line]
        assert row.fix_hp in line and f" {row.status} " in line and f" {row.failure_kind or '/'} " in line
        assert row.finished_at[:19].replace("T", " ") in line and "+00:00" not in line


def test_a_narrower_table_folds_fix_hp_after_its_commas(tmp_path: Path) -> None:
    text, rows = _render(tmp_path, 175)
    lines = text.splitlines()
    assert "fix_hp" in lines[1] and "kind" in lines[1]  # still the table
    first = next(index for index, line in enumerate(lines) if rows[0].run_id in line)
    after = next(index for index, line in enumerate(lines) if rows[1].run_id in line)
    pieces = [piece for piece in re.findall(r"[^\s│]+", "\n".join(lines[first:after])) if "=" in piece]
    assert len(pieces) > 1 and "".join(pieces) == LONG_HP and all(piece.endswith(",") for piece in pieces[:-1])


def test_at_80_columns_each_run_is_a_card_of_whole_values(tmp_path: Path) -> None:
    text, rows = _render(tmp_path, 80)
    lines = text.splitlines()
    for row in rows:
        head = next(index for index, line in enumerate(lines) if line.startswith(row.run_id))
        card = lines[head:head + 5]
        assert f"fix_hp {row.fix_hp}" in card[2]
        assert card[0].endswith(row.status + (f" ({row.failure_kind})" if row.failure_kind else ""))
        assert f"case {row.case} · vendor cpu · config cpu 2x1 · precision fp32" in card[1]


def test_runs_filters_by_kind_and_since(tmp_path: Path) -> None:
    database = _fill(tmp_path)
    assert [r.run_id for r in runs(database, kind="stalled")] == ["20261206-011000-bbbbbb"]
    assert [r.failure_kind for r in runs(database, status="failed")] == ["interrupted", "stalled", "timeout"]
    assert [r.run_id for r in runs(database, since="2026-12-06T01:05:00+00:00")] == [
        "20261206-012000-cccccc", "20261206-011000-bbbbbb"]


def test_since_reads_durations_dates_and_times() -> None:
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)
    assert since_text("90m", now) == "2026-12-06T10:30:00+00:00"
    assert since_text("7d", now) == "2026-11-29T12:00:00+00:00"
    assert since_text("2026-12-01") == "2026-12-01T00:00:00+00:00"
    assert since_text("2026-12-01T08:00:00+08:00") == "2026-12-01T00:00:00+00:00"


def _history(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "history", "--results", str(tmp_path), *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_status_takes_every_status_and_kind_on_the_command_line(tmp_path: Path) -> None:
    _fill(tmp_path)
    for kind in KINDS:
        proc = _history(tmp_path, "--status", kind)
        assert proc.returncode == 0, proc.stderr
        shown = set(re.findall(r"20261\d{3}-\d{6}-[a-f]{6}", proc.stdout))
        expected = {"stalled": {"20261206-011000-bbbbbb"}, "interrupted": {"20261206-012000-cccccc"},
                    "timeout": {"20261205-230000-dddddd"}}.get(kind, set())
        assert shown == expected, (kind, proc.stdout + proc.stderr)
    success = _history(tmp_path, "--status", "success", "--case", "resnet50")
    assert set(re.findall(r"20261\d{3}-\d{6}-[a-f]{6}", success.stdout)) == {"20261206-010000-aaaaaa"}
    since = _history(tmp_path, "--since", "2026-12-06", "--case", "resnet50")
    assert set(re.findall(r"20261\d{3}-\d{6}-[a-f]{6}", since.stdout)) == {"20261206-010000-aaaaaa",
                                                                           "20261206-011000-bbbbbb"}
    bad = _history(tmp_path, "--status", "crashed")
    assert bad.returncode == 2 and "invalid choice: 'crashed'" in bad.stderr
    late = _history(tmp_path, "--since", "yesterday")
    assert late.returncode == 2 and "expected a duration (90m, 12h, 7d)" in late.stderr
