"""`python -m harness compare A B` on recorded results (history band, repeats band,
no noise figure, bad input) and on two real runs of the test hosts; a third run there,
with a diverging learning rate, ends as `job` with the NaN message and its step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import REPO_ROOT
from harness.core.record import record_run
from harness.core.results import Efficiency, Energy, Metrics, RunResult
from harness.report.compare_runs import compare, load_side

TINY = "bs=4,image_size=32,num_classes=10,lr=0.001,max_steps=3"  # bs=2 at 32 px: NaN within steps


def result(run_id: str, p_core: float, night: int, *, mfu: float | None = None, j_per_1k: float | None = None) -> RunResult:
    return RunResult(
        run_id=run_id, case="resnet50", vendor="nvidia", accelerator="A100", nnodes=1, nproc_per_node=8,
        precision="tf32", fix_hp="bs=256", status="success", finished_at=f"2026-11-{night:02d}T01:00:00+00:00",
        metrics=Metrics(p_core=p_core, p_train=p_core * 0.97, p_whole=p_core * 0.95, acc=75.0, world_size=8),
        efficiency=Efficiency(precision="tf32", mfu=mfu) if mfu is not None else None,
        energy=Energy(j_per_1k_samples=j_per_1k) if j_per_1k is not None else None)


def write(results: Path, run: RunResult) -> Path:
    out = results / run.run_id / run.case / run.config_name
    record_run(run, "", out, results)
    return out / "results.json"


def harness(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def by_metric(rows: list) -> dict:
    return {row.metric: row for row in rows}


def test_the_history_beside_the_runs_gives_the_band(tmp_path: Path) -> None:
    for night, value in enumerate([1000.0, 1004.0, 996.0, 1003.0], start=1):
        write(tmp_path, result(f"night-{night}", value, night, mfu=value / 2000))
    a = write(tmp_path, result("night-5", 1000.0, 5, mfu=0.5, j_per_1k=900.0))
    b = write(tmp_path, result("tonight", 900.0, 6, mfu=0.45, j_per_1k=1000.0))
    rows = by_metric(compare(load_side(a), load_side(b)).rows)
    assert rows["p_core"].ratio == pytest.approx(0.9) and rows["p_core"].band == pytest.approx(0.02)
    assert rows["p_core"].band_source == "history (n=5)" and rows["p_core"].verdict == "beyond noise (lower)"
    assert rows["mfu"].band == rows["p_core"].band and rows["mfu"].verdict == "beyond noise (lower)"
    assert rows["acc"].verdict == "within noise"
    assert rows["j_per_1k"].verdict == "no noise figure"  # no history column, one run a side
    shown = harness("compare", a, b)
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if "p_core" in line)
    assert "1,000.0" in line and "900.0" in line and "0.900" in line and "beyond noise (lower)" in line


def test_repeats_give_the_band_without_a_history(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    for index, value in enumerate([1000.0, 1040.0, 960.0]):
        run = result(f"a-{index}", value, 1 + index)
        out = a_dir / run.run_id
        out.mkdir(parents=True)
        (out / "results.json").write_text(run.model_dump_json())
    for index, value in enumerate([980.0, 1010.0, 950.0]):
        run = result(f"b-{index}", value, 10 + index)
        out = b_dir / run.run_id
        out.mkdir(parents=True)
        (out / "results.json").write_text(run.model_dump_json())
    rows = by_metric(compare(load_side(a_dir), load_side(b_dir)).rows)
    assert rows["p_core"].a == 1000.0 and rows["p_core"].b == 980.0
    assert rows["p_core"].band_source == "repeats (n=6)" and rows["p_core"].verdict == "within noise"


def test_bad_input_names_the_path_and_what_was_expected(tmp_path: Path) -> None:
    good = write(tmp_path, result("good", 1000.0, 1))
    (tmp_path / "junk.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "missing", tmp_path / "junk.json", tmp_path / "empty"):
        done = harness("compare", good, bad)
        assert done.returncode == 2, done.stdout + done.stderr
        assert str(bad) in done.stderr and "expected a results.json, a run folder" in done.stderr
        assert "Traceback" not in done.stderr


# -- real runs ---------------------------------------------------------------------------------

def bench(hosts: Path, results: Path, run_id: str, fix_hp: str, case: str = "mobilenetv2",
          config: str = "2x1") -> subprocess.CompletedProcess[str]:
    return harness("bench", "--case", case, "--vendor", "cpu", "--config", config, "--hosts", hosts,
                   "--results", results, "--run-id", run_id, "--fix-hp", fix_hp, timeout=300)


# -- the test hosts (not run where they are not up) --------------------------------------------

def test_compare_two_runs_of_the_test_hosts(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    hosts = make_hosts_yaml()
    results = tmp_path / "results"
    for run_id in ("hosts-a", "hosts-b"):
        done = bench(hosts, results, run_id, TINY, config="2x1")
        assert done.returncode == 0, done.stdout + done.stderr
    shown = harness("compare", results / "hosts-a" / "mobilenetv2" / "2x1" / "results.json", results / "hosts-b")
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if "p_core" in line and "2x1" in line)
    assert "no noise figure" in line
    found = compare(load_side(results / "hosts-a"), load_side(results / "hosts-b"))
    p_core = next(row for row in found.rows if row.metric == "p_core")
    assert p_core.a and p_core.b and p_core.ratio == pytest.approx(p_core.b / p_core.a)

    # A diverging learning rate: the loss turns NaN, the ranks stop, the run is the job's fault.
    diverging = bench(hosts, results, "hosts-nan", "bs=4,image_size=32,synthetic_samples=64,lr=1e9", config="2x1")
    assert diverging.returncode == 1, diverging.stdout + diverging.stderr
    recorded = json.loads((results / "hosts-nan" / "mobilenetv2" / "2x1" / "results.json").read_text())
    assert recorded["status"] == "failed" and recorded["failure_kind"] == "job"
    # the step it diverged at depends on the CPU's rounding (tests/cases/test_cases_loss.py)
    assert re.search(r"loss is NaN at step [2-8]\b", recorded["failure"].splitlines()[0]), recorded["failure"]
