"""The noise rule on recorded histories (real SQLite files written by history.record
from RunResult objects): a change inside the comparable history's spread is within
noise, one outside it a regression; one line per run, p_core first; too little
history is said, not guessed; an identical history gets the minimum band."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT
from harness.core.results import Metrics, RunResult
from harness.report import history
from harness.report.noise import MIN_BAND, NoiseRule, band


def result(run_id: str, p_core: float, night: int, *, drop_train: float = 0.0) -> RunResult:
    return RunResult(
        run_id=run_id, case="resnet50", vendor="nvidia", accelerator="A100", nnodes=1, nproc_per_node=8,
        precision="tf32", fix_hp="bs=256", status="success", finished_at=f"2026-11-{night:02d}T01:00:00+00:00",
        metrics=Metrics(p_core=p_core, p_train=p_core * (0.97 - drop_train), p_whole=p_core * 0.95, world_size=8))


def recorded(tmp_path: Path, p_cores: list[float]) -> Path:
    database = tmp_path / history.HISTORY_FILE
    for night, value in enumerate(p_cores, start=1):
        history.record(database, result(f"night-{night}", value, night), tmp_path / f"night-{night}" / "results.json")
    return database


# Two histories of five nights around 1000: one spread about 5%, one about 1%.
WIDE = [1000.0, 1034.0, 966.0, 1020.0, 980.0]  # MAD 20: ±5.9% at k=2 (2 x 1.4826 x 20 / 1000)
NARROW = [1000.0, 1004.0, 996.0, 1003.0, 997.0]  # MAD 3: ±1.3% at k=3, the 2% floor holds


def test_a_3_percent_drop_inside_a_5_percent_spread_is_within_noise(tmp_path: Path) -> None:
    database = recorded(tmp_path, WIDE)
    rule = NoiseRule(runs=10, k=2.0)
    assert band(WIDE, rule) is not None and 0.05 < band(WIDE, rule).half_width < 0.06  # type: ignore[union-attr]
    tonight = result("tonight", 970.0, 20)
    check = history.check(database, tonight, rule)
    assert check is not None and check.verdict == "within noise" and not check.regression
    assert history.regressions(database, tonight, rule) == []
    line = check.describe()
    assert line.startswith("p_core 970.0 is 3.0% below the median 1,000.0 (noise ±5.9%): within noise")
    assert "\n" not in line and "last 5 successful runs" in line


def test_a_10_percent_drop_outside_a_1_percent_spread_is_a_regression_on_one_line(tmp_path: Path) -> None:
    database = recorded(tmp_path, NARROW)
    tonight = result("tonight", 900.0, 20)
    [check] = history.regressions(database, tonight, NoiseRule(k=3.0))
    line = check.describe()
    assert line.startswith("p_core 900.0 is 10.0% below the median 1,000.0 (noise ±2.0%): regression")
    # the three throughputs fell: one line, p_core first, then p_train and p_whole in short form
    assert line.index("p_core") < line.index("p_train -10.0%") < line.index("p_whole -10.0%") and "\n" not in line
    assert "(night-5, night-4, night-3, night-2, night-1)" in line
    # the MAD band of NARROW is 1.3%: the 2% floor is what holds
    assert band(NARROW, NoiseRule()).half_width == MIN_BAND  # type: ignore[union-attr]


def test_fewer_than_three_earlier_runs_is_not_enough_history(tmp_path: Path) -> None:
    database = recorded(tmp_path, [1000.0, 1001.0])
    check = history.check(database, result("tonight", 500.0, 20))
    assert check is not None and check.verdict == "not enough history" and not check.regression
    assert check.describe().startswith("not enough history (2 earlier runs, 3 needed for a noise band): "
                                       "p_core 500.0 is 50.0% below the median 1,000.5")
    first = history.check(tmp_path / "empty" / history.HISTORY_FILE, result("first", 500.0, 1))
    assert first is not None and first.describe() == "not enough history (0 earlier runs, 3 needed for a noise band)"


def test_identical_history_uses_the_minimum_band(tmp_path: Path) -> None:
    database = recorded(tmp_path, [1000.0] * 4)
    assert history.check(database, result("a", 985.0, 20)).verdict == "within noise"  # type: ignore[union-attr]
    assert history.check(database, result("b", 975.0, 20)).verdict == "regression"  # type: ignore[union-attr]


def test_only_the_last_n_runs_count(tmp_path: Path) -> None:
    # Old nights were slow; the last three are fast and tight: with N=3 tonight's drop is a regression.
    database = recorded(tmp_path, [500.0, 520.0, 480.0, 1000.0, 1002.0, 998.0])
    tonight = result("tonight", 900.0, 20)
    assert history.check(database, tonight, NoiseRule(runs=3)).regression  # type: ignore[union-attr]
    assert not history.check(database, tonight, NoiseRule(runs=6)).regression  # type: ignore[union-attr]


def harness(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_history_and_report_take_n_and_k(tmp_path: Path) -> None:
    from harness.core.record import record_run

    for night, value in enumerate(WIDE, start=1):
        earlier = result(f"night-{night}", value, night)
        record_run(earlier, "", tmp_path / earlier.run_id / "resnet50" / "1x8", tmp_path)
    tonight = result("tonight", 940.0, 20)
    record_run(tonight, "", tmp_path / "tonight" / "resnet50" / "1x8", tmp_path)
    loose = harness("report", tmp_path / "tonight", "--noise-k", "3")
    assert loose.returncode == 0, loose.stderr
    assert "tonight within noise: p_core 940.0 is 6.0% below" in loose.stdout
    strict = harness("report", tmp_path / "tonight", "--noise-k", "1")
    assert "tonight regression: p_core 940.0 is 6.0% below" in strict.stdout
    assert strict.stdout.count("tonight regression") == 1
    listed = harness("history", "--results", tmp_path, "--noise-k", "1")
    row = next(line for line in listed.stdout.splitlines() if "tonight" in line)
    assert "p_core -6.0% (±3.0%) regression" in row
    assert "too few" in next(line for line in listed.stdout.splitlines() if "night-2" in line)
    bad = harness("report", tmp_path, "--noise-runs", "0")
    assert bad.returncode == 2 and "expected a whole number >= 1" in bad.stderr


@pytest.mark.parametrize("values", [[], [0.0, 0.0]])
def test_no_band_without_a_median(values: list[float]) -> None:
    assert band(values, NoiseRule()) is None
