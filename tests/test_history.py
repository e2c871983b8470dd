"""The results database and the regression check, on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import REPO_ROOT
from harness.core.results import Metrics, RunResult
from harness.report.history import HISTORY_FILE, record, regressions, runs


def run(run_id: str, p_core: float, *, finished: str, status: str = "success", fix_hp: str = "bs=256,lr=0.8",
        precision: str = "fp32") -> RunResult:
    return RunResult(
        run_id=run_id, case="resnet50", vendor="nvidia", accelerator="A100", nnodes=1, nproc_per_node=8,
        precision=precision, fix_hp=fix_hp, status=status, finished_at=finished, image="bench/nvidia:abc (sha256:1)",
        metrics=Metrics(p_core=p_core, p_train=p_core * 0.97, p_whole=p_core * 0.95, acc=75.1, world_size=8),
    )


def fill(db: Path, tmp_path: Path, *results: RunResult) -> None:
    for result in results:
        record(db, result, tmp_path / result.run_id / "results.json")


def test_a_slower_run_is_a_regression_against_the_median_of_its_peers(tmp_path: Path) -> None:
    db = tmp_path / HISTORY_FILE
    fill(db, tmp_path,
         run("r1", 6100, finished="2026-11-20T01:00:00+00:00"),
         run("r2", 6000, finished="2026-11-21T01:00:00+00:00"),
         run("r3", 6200, finished="2026-11-22T01:00:00+00:00"),
         run("crashed", 100, finished="2026-11-23T01:00:00+00:00", status="failed"),
         run("other-hp", 9000, finished="2026-11-23T02:00:00+00:00", fix_hp="/"),
         run("amp", 9000, finished="2026-11-23T03:00:00+00:00", precision="amp"))
    tonight = run("r4", 5200, finished="2026-11-24T01:00:00+00:00")
    fill(db, tmp_path, tonight)
    [found] = regressions(db, tonight)  # one per run, whatever the number of metrics that fell
    assert [c.column for c in found.checks] == ["p_core", "p_train", "p_whole"]
    assert found.checks[0].band.median == 6100 and found.baseline_runs == ["r3", "r2", "r1"]
    assert found.describe().startswith("p_core 5,200.0 is 14.8% below the median 6,100.0 (noise ±7.3%): regression")


def test_within_the_noise_or_without_peers_is_no_regression(tmp_path: Path) -> None:
    db = tmp_path / HISTORY_FILE
    fill(db, tmp_path, run("r1", 6100, finished="2026-11-20T01:00:00+00:00"),
         run("r2", 6000, finished="2026-11-20T02:00:00+00:00"), run("r3", 6300, finished="2026-11-20T03:00:00+00:00"))
    assert regressions(db, run("r4", 5900, finished="2026-11-21T01:00:00+00:00")) == []  # -3.3 %, band ±7.3 %
    assert regressions(db, run("first-amp", 100, finished="2026-11-21T01:00:00+00:00", precision="amp")) == []
    assert regressions(db, run("failed", 100, finished="2026-11-21T01:00:00+00:00", status="failed")) == []
    assert regressions(tmp_path / "none.sqlite", run("r5", 1, finished="2026-11-21T01:00:00+00:00")) == []


def test_recording_the_same_run_twice_keeps_one_row_and_lists_newest_first(tmp_path: Path) -> None:
    db = tmp_path / HISTORY_FILE
    fill(db, tmp_path, run("old", 1000, finished="2026-11-20T01:00:00+00:00"),
         run("new", 1100, finished="2026-11-21T01:00:00+00:00"), run("new", 1200, finished="2026-11-21T01:00:00+00:00"))
    rows = runs(db)
    assert [(r.run_id, r.p_core) for r in rows] == [("new", 1200), ("old", 1000)]
    assert runs(db, case="vit") == [] and len(runs(db, vendor="nvidia")) == 2


def test_history_command_lists_recorded_runs(tmp_path: Path) -> None:
    fill(tmp_path / HISTORY_FILE, tmp_path, run("night-1", 6105.4, finished="2026-11-20T01:00:00+00:00"),
         run("night-2", 10, finished="2026-11-21T01:00:00+00:00", status="failed"))
    proc = subprocess.run([sys.executable, "-m", "harness", "history", "--results", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    night1 = next(line for line in lines if "night-1" in line)
    assert "6105" in night1 and "75.10%" in night1 and "success" in night1
    assert "failed" in next(line for line in lines if "night-2" in line)
    assert proc.stdout.index("night-2") < proc.stdout.index("night-1")
