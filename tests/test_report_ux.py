"""Reports a person can read in the morning: `report` names the case, vendor and
config in every row, shows failure tails only with --verbose and flags
regressions; `history` shows full run ids and filters by status; `readme --out`
keeps an existing file unless --force."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import REPO_ROOT
from harness.core.record import record_run
from harness.core.results import Metrics, RunResult

LONG_ID = "nightly-20261125-180000-j12r3-a2-abcdef"


def run(run_id: str, p_core: float | None, finished: str, failure: str | None = None, case: str = "resnet50") -> RunResult:
    return RunResult(
        run_id=run_id, case=case, vendor="nvidia", accelerator="A100", nnodes=1, nproc_per_node=8, precision="fp32",
        fix_hp="bs=256,lr=0.8", status="failed" if failure else "success", failure=failure,
        failure_kind="job" if failure else None, finished_at=finished,
        metrics=Metrics(p_core=p_core, p_train=p_core, p_whole=p_core, world_size=8) if p_core else None)


def harness(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})


def fill(results: Path) -> None:
    for index, value in enumerate((6000.0, 6100.0, 6200.0)):
        result = run(f"base-{index}", value, f"2026-11-2{index}T01:00:00+00:00")
        record_run(result, "", results / result.run_id / "resnet50" / "1x8", results)
    slow = run(LONG_ID, 5000.0, "2026-11-24T01:00:00+00:00")
    record_run(slow, "", results / slow.run_id / "resnet50" / "1x8", results)
    crashed = run("crashed-1", None, "2026-11-24T02:00:00+00:00", case="vit",
                  failure="node 0 (node1) exited 1: rank 3 raised\nrank 3: Traceback (most recent call last)\n  boom")
    record_run(crashed, "", results / crashed.run_id / "vit" / "1x8", results)


def test_report_rows_name_the_case_and_tails_need_verbose(tmp_path: Path) -> None:
    fill(tmp_path)
    quiet = harness("report", tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    rows = {line.split()[1]: line for line in quiet.stdout.splitlines() if line.startswith("│ ") and line.split()[1] != "│"}
    assert "resnet50 · nvidia" in rows["base-0"] and "vit · nvidia" in rows["crashed-1"] and "（1x8）" in rows["base-0"]
    assert "crashed-1 FAILED: node 0 (node1) exited 1: rank 3 raised (--verbose" in quiet.stdout
    assert "boom" not in quiet.stdout
    assert f"{LONG_ID} regression: p_core 5,000.0 is" in quiet.stdout
    loud = harness("report", tmp_path, "--verbose")
    assert "boom" in loud.stdout and "Traceback" in loud.stdout


def test_history_shows_full_run_ids_and_filters_by_status(tmp_path: Path) -> None:
    fill(tmp_path)
    listed = harness("history", "--results", tmp_path)
    assert listed.returncode == 0 and LONG_ID in listed.stdout, listed.stdout
    failed = harness("history", "--results", tmp_path, "--status", "failed")
    assert "crashed-1" in failed.stdout and LONG_ID not in failed.stdout and "base-0" not in failed.stdout
    vit = harness("history", "--results", tmp_path, "--case", "vit", "--status", "success")
    assert "crashed-1" not in vit.stdout


def test_readme_out_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    fill(tmp_path)
    out = tmp_path / "page.md"
    out.write_text("my own notes\n")
    refused = harness("readme", tmp_path / LONG_ID, "--out", out)
    assert refused.returncode == 2 and "exists already" in refused.stderr and "--force" in refused.stderr
    assert out.read_text() == "my own notes\n"
    forced = harness("readme", tmp_path / LONG_ID, "--out", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "性能指标" in out.read_text()
