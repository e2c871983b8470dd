"""Stragglers named for real: a 2x1 resnet50 run on the two test hosts whose node 1
is slowed by a duty cycle of `docker pause` / `docker unpause` on its container
(the cgroup freezer stops its training process for part of every step), and the
same run without it. Per-rank timing (cases/steptimes.py) must name node 1's
rank with a score below the threshold, and the undisturbed run must name none."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from test_faults import (
    TINY,
    bench,
    bench_argv,
    containers_of,
    controller,
    docker,
    results_of,
    wait_for_step,
    wait_running,
    work_dir,
)

STEPS = 24  # enough timed steps for a p50 the machine's noise does not move by 10 %
PAUSED_S, RUNNING_S = 0.4, 0.4


def _node_container(run_id: str, node_rank: int) -> str:
    found = [c for c in containers_of(run_id, running=True)
             if docker("inspect", "--format", '{{index .Config.Labels "bench.node_rank"}}', c).stdout.strip()
             == str(node_rank)]
    assert len(found) == 1, found
    return found[0]


def _duty_cycle(container: str, stop: threading.Event) -> None:
    """Pause and unpause until told to stop or the container is gone (always left running)."""
    while not stop.is_set():
        if docker("pause", container, timeout=30).returncode != 0:
            return
        stop.wait(PAUSED_S)
        docker("unpause", container, timeout=30)
        stop.wait(RUNNING_S)


def test_a_node_slowed_by_a_pause_duty_cycle_is_named_a_straggler(make_hosts_yaml: Callable[..., Path],
                                                                   tmp_path: Path) -> None:
    run_id = "straggler-paused"
    hosts = make_hosts_yaml()
    stop = threading.Event()
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1",
                               "--fix-hp", f"{TINY},max_steps={STEPS}")) as proc:
        wait_running(run_id, 2, proc=proc)
        wait_for_step(work_dir(hosts), rank=1)
        slowing = threading.Thread(target=_duty_cycle, args=(_node_container(run_id, 1), stop), daemon=True)
        slowing.start()
        try:
            stdout, stderr = proc.communicate(timeout=1200)  # a deadline, not a speed
        finally:
            stop.set()
            slowing.join(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1")
    assert [r["rank"] for r in result["ranks"]] == [0, 1]
    [straggler] = result["stragglers"]
    assert (straggler["rank"], straggler["host"]) == (1, "node2")
    assert straggler["score"] < result["straggler_threshold"] == 0.9
    assert straggler["fastest_compute_s_p50"] < straggler["compute_s_p50"]
    assert "no device monitor for this vendor" in straggler["why"], straggler["why"]
    verdicts = {v["node_rank"]: v for v in result["node_verdicts"]}
    assert verdicts[0]["verdict"] == "ok" and verdicts[1]["verdict"] == "slow"
    # The terminal names the flagged node under the table, once.
    flagged = [line for line in stdout.splitlines() if "node 1 (node2" in line and ": slow (rank 1" in line]
    assert len(flagged) == 1, stdout
    report = (tmp_path / run_id / "resnet50" / "2x1" / "report.html").read_text()
    assert "Stragglers" in report and "node 1 (node2" in report
    notes = (tmp_path / run_id / "resnet50" / "2x1" / "README.md").read_text()
    assert "node 0 (node1" in notes and ": ok" in notes and ": slow (rank 1" in notes


def test_the_same_run_undisturbed_names_no_straggler(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "straggler-none"
    proc = bench(make_hosts_yaml(), tmp_path, run_id, "--config", "2x1", "--fix-hp", f"{TINY},max_steps={STEPS}",
                 timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = results_of(tmp_path, run_id, "2x1")
    assert result["stragglers"] == [] and result["input_bound"] == []
    assert [v["verdict"] for v in result["node_verdicts"]] == ["ok", "ok"]
    for rank in result["ranks"]:
        assert rank["steps"] == STEPS and rank["compute_s_p50"] > 0 and rank["comm_s_p50"] is not None
    assert "slow (" not in proc.stdout
