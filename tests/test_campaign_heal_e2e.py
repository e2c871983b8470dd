"""A campaign that heals itself, on the SSH test hosts (real sshd, dockerd,
torchrun). Several inventory names share one sshd, each with its own work dir,
so four hosts stand on the two test machines:

- a host that does not answer at preflight (the test's unreachable address):
  the job runs on the spare in its place, the attempt says which replaced which,
  the second occurrence quarantines it (BENCH-H01), and a campaign stopped and
  resumed keeps the quarantine (the spare is used without trying the host again);
- the bad node found for real: one host's containers throttled (their cgroup's
  CFS quota, tests/cpu_throttle.py) to a fiftieth of a CPU in their timed sweep,
  the bandwidth gate set between the healthy and the capped figure: the pairwise
  runs name that host (BENCH-F02) and quarantine it, and with no spare left the
  job's retry is skipped;
- two hosts and no spare: both suspects, nobody quarantined.

Every test removes the containers of its campaign in a finally (campaign_name).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cpu_throttle import throttled_by_progress
from test_campaign_e2e import (
    TINY,
    campaign_argv,
    containers,
    docker,
    run_campaign,
    state_of,
    wait_for,
    write_suite,
)
from test_faults import bench

from harness import REPO_ROOT

if TYPE_CHECKING:
    from conftest import TestInfra

# One size, 1 MiB (where the peak always was), timed over 40 iterations so that a healthy pair's
# figure is a mean over tens of milliseconds, not a lucky few; 30 warm-ups before the clock starts
# (0.2 s at a tenth of a CPU, where the throttle below follows the rank's events within 1-4 ms).
SWEEP = "min_bytes=1048576,max_bytes=1048576,step_factor=4,warmup_iters=30,iters=40"
# How node3's containers are throttled, by the last event their rank wrote: CFS period and quota
# in µs (the kernel's smallest quota is 1 ms; None: no limit). From `config` (torch imported, the
# process group not yet formed) a tenth of a CPU in 1 ms slices, which stretches the untimed start
# of the sweep tenfold; from `train_start` a fiftieth (a capped rank needs about 1 ms of CPU per
# all-reduce, so it takes about 50 ms where a healthy pair takes 2-4); from `train_stop` no limit,
# so that the rank's exit is not slowed. Docker's `--cpus 0.1` throughout (10 ms slices) brought
# capped pairs within 2x of healthy ones, and beside a CPU hog within the bar.
THROTTLE_BY_EVENT: dict[str, tuple[int, int | None]] = {
    "config": (10_000, 1_000), "train_start": (50_000, 1_000), "train_stop": (100_000, None)}


@pytest.fixture
def campaign_name(docker_engine: None) -> Iterator[str]:
    """A fresh campaign name; its containers are removed after the test (marks it `hosts`)."""
    name = f"heal{uuid.uuid4().hex[:6]}"
    try:
        yield name
    finally:
        for cid in containers(name):
            docker("rm", "--force", cid)


def quarantine_of(results: Path) -> dict[str, Any]:
    path = results / "quarantine.json"
    found: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"entries": {}}
    return found


def host_faults(attempt: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempt's faults but straggler flags (a tiny run on a busy machine may have one)."""
    return [f for f in attempt["faults"] if f["code"] != "BENCH-S01"]


def run_json(results: Path, run_id: str, case: str, config: str) -> Any:
    return json.loads((results / run_id / case / config / "results.json").read_text())


def test_an_unreachable_host_runs_on_the_spare_is_quarantined_and_the_resume_keeps_it(
        make_hosts_yaml: Callable[..., Path], infra: TestInfra, tmp_path: Path, campaign_name: str) -> None:
    node1 = infra.host("node1")
    ghost = infra.unreachable
    hosts = make_hosts_yaml(extra_hosts=[{"name": "ghost", "address": ghost.address, "port": ghost.port},
                                         {"name": "spare", "address": node1.address, "port": node1.port}],
                            cluster_overrides={"connect_window_s": 3})  # the ghost is given up on sooner
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "config": "2x1", "fix_hp": TINY, "hosts": ["node2", "ghost"]},
        {"case": "resnet50", "config": "2x1", "fix_hp": TINY, "hosts": ["node2", "ghost"]},
        {"case": "resnet50", "config": "2x1", "fix_hp": "bs=2,image_size=32,num_classes=10,max_steps=40",
         "hosts": ["node2", "ghost"]},
    ], spares=["spare"], quarantine={"window": "1h", "expiry": "2h"})
    results = tmp_path / "results"
    proc = subprocess.Popen(campaign_argv(suite, results), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def job_3_running() -> bool:
            files = sorted((results / "campaigns" / campaign_name).glob("*/state.json"))
            if not files:
                return False
            units = json.loads(files[-1].read_text())["units"]
            return units[2]["status"] == "running" and len(containers(f"{campaign_name}", running=True)) == 2

        wait_for(job_3_running, "job 3's containers", proc=proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 130, stdout + stderr
    state = state_of(results, campaign_name)
    first, second, third = state["units"]
    for done in (first, second):
        (attempt,) = done["attempts"]
        assert done["status"] == "success" and attempt["hosts"] == ["node2", "spare"]  # node order kept
        assert attempt["replaced"] == {"ghost": "spare"}
        assert [(f["host"], f["code"]) for f in host_faults(attempt)] == [("ghost", "BENCH-H01")]
        recorded = json.loads(Path(attempt["results_json"]).read_text())
        assert [n["host"] for n in recorded["nodes"]] == ["node2", "spare"]
        assert any(w.startswith("spare spare in place of ghost: ghost is unreachable (lock not taken:") for w in recorded["warnings"])
    # The second time within the window quarantined it, with its code.
    (entry,) = state["quarantined"]
    assert entry["host"] == "ghost" and entry["codes"] == ["BENCH-H01"] and entry["until"]
    assert set(quarantine_of(results)["entries"]) == {"ghost"}
    assert third["status"] == "interrupted" and third["attempts"][0]["status"] == "interrupted"
    assert host_faults(third["attempts"][0]) == []  # quarantined: not even tried
    status = subprocess.run(campaign_argv(suite, results)[:3] + ["campaign", "status", "--results", str(results)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    shown = " ".join(status.stdout.split())
    assert "0 running, 1 interrupted, 0 waiting" in shown and "(stopped)" in shown, shown
    assert "quarantined: ghost: BENCH-H01" in shown, shown

    resumed = run_campaign(suite, results, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "ghost is quarantined since" in resumed.stdout + resumed.stderr
    state = state_of(results, campaign_name)
    assert [e["host"] for e in state["quarantined"]] == ["ghost"]  # kept, not made again
    last = state["units"][2]["attempts"][-1]
    assert last["status"] == "success" and last["replaced"] == {"ghost": "spare"} and host_faults(last) == []
    summary = next((results / "campaigns" / campaign_name).glob("*/summary.md")).read_text()
    ghost_row = next(line for line in summary.splitlines() if line.startswith("| ghost |"))
    assert "BENCH-H01 ×2" in ghost_row and "until" in ghost_row and "spare (" in ghost_row
    assert containers(campaign_name) == []


def test_a_slowed_host_is_found_by_pairwise_runs_and_quarantined(
        make_hosts_yaml: Callable[..., Path], infra: TestInfra, tmp_path: Path, campaign_name: str) -> None:
    node1, node2 = infra.host("node1"), infra.host("node2")
    hosts = make_hosts_yaml(extra_hosts=[{"name": "node3", "address": node1.address, "port": node1.port},
                                         {"name": "node4", "address": node2.address, "port": node2.port}])
    results = tmp_path / "results"
    healthy = bench(hosts, results, f"{campaign_name}-calibrate", "--case", "allreduce", "--config", "2x1",
                    "--fix-hp", SWEEP)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    peak = run_json(results, f"{campaign_name}-calibrate", "allreduce", "2x1")["bandwidth"]["peak_busbw_gbps"]
    # Between the two, with room on both sides: a healthy pair measured 0.31-0.60 GB/s here and
    # its calibration 0.48-0.87, a capped pair 0.010-0.016 (also beside a CPU hog); the calibration
    # is one run on a machine whose load changes while the campaign runs.
    bar = peak / 8
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "config": "4x1", "fix_hp": TINY, "hosts": ["node1", "node2", "node3", "node4"],
         "retries": 1}], gates={"min_busbw_gbps": bar, "busbw_fix_hp": SWEEP})
    with throttled_by_progress("node3", campaign_name, THROTTLE_BY_EVENT, "train_start") as throttled:
        # a deadline, not a speed: capped runs are slow
        done = subprocess.run(campaign_argv(suite, results), cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=1500, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert any(run.endswith("-busbw") for run in throttled.during_sweep.values()), throttled
    state = state_of(results, campaign_name)
    (search,) = state["bisections"]
    pairs = {tuple(p["hosts"]): p for p in search["pairs"]}
    assert list(pairs) == [("node1", "node2"), ("node3", "node4"), ("node2", "node3"), ("node4", "node1")]
    for hosts_of_pair, pair in pairs.items():
        assert pair["verdict"] == ("slow" if "node3" in hosts_of_pair else "ok"), (pair, bar, throttled.changes)
        recorded = run_json(results, pair["run_id"], "allreduce", "2x1")  # each its own run
        assert recorded["status"] == "success" and [n["host"] for n in recorded["nodes"]] == list(hosts_of_pair)
    assert (search["named"], search["code"]) == ("node3", "BENCH-F02")
    (entry,) = state["quarantined"]
    assert entry["host"] == "node3" and entry["codes"] == ["BENCH-F02"]
    assert set(quarantine_of(results)["entries"]) == {"node3"}
    first, retry = state["units"][0]["attempts"]
    assert first["failure"].startswith("health gate failed: all-reduce bus bandwidth")
    assert retry["no_spare"] == ["node3"] and retry["failure"].startswith(
        "skipped: no spare left for quarantined host(s) node3 (node3: BENCH-F02 since ")
    assert "failed (infra, not retried)" in output
    summary = next((results / "campaigns" / campaign_name).glob("*/summary.md")).read_text()
    assert "**node3** named (BENCH-F02 slow in every pair" in summary
    assert containers(campaign_name) == []


def test_two_hosts_and_no_spare_are_both_suspects_and_none_is_quarantined(
        make_hosts_yaml: Callable[..., Path], tmp_path: Path, campaign_name: str) -> None:
    hosts = make_hosts_yaml()
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "config": "2x1", "fix_hp": TINY, "retries": 0}],
        gates={"min_busbw_gbps": 1e6, "busbw_fix_hp": SWEEP})
    results = tmp_path / "results"
    done = run_campaign(suite, results)
    assert done.returncode == 1, done.stdout + done.stderr
    state = state_of(results, campaign_name)
    (search,) = state["bisections"]
    assert search["pairs"] == [] and search["named"] is None and search["suspects"] == ["node1", "node2"]
    assert "node1 and node2 are suspects; neither is quarantined" in search["note"]
    assert state["quarantined"] == [] and quarantine_of(results)["entries"] == {}
    assert "pairwise runs: 2 hosts and no spare" in done.stdout + done.stderr
    assert containers(campaign_name) == []
