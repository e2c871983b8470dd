"""Stragglers named for real: a 2x1 resnet50 run on the two test hosts whose node 1
is slowed once it trains (`docker update --cpus` caps its container's CPU time:
what a throttled device does to one rank), and the same run with both nodes given
the same CPU share. Per-rank timing (cases/steptimes.py) must name node 1's rank
with a score below the threshold, and the even run must name none.

The threshold is the site's (cluster.straggler_threshold, --straggler-threshold):
cpu ranks on this 2-core machine share their cores with each other's gloo
threads, and healthy runs measured scores of 0.88-0.96, so the test hosts'
inventory says 0.7; the capped node scores about 0.3-0.5."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from test_faults import (
    bench_argv,
    controller,
    docker,
    node_container,
    results_of,
    wait_for_step,
    wait_running,
    work_dir,
)

STEPS = 12
CASE = "resnet50"  # its steps last long enough for the cap to land while it trains
TINY = "bs=2,image_size=32,num_classes=10"  # 2 epochs of synthetic data hold STEPS at bs=2
SITE_THRESHOLD = 0.7
CAPPED_CPUS = "0.4"
# Both nodes of the even run share one core, where the scheduler divides it evenly between
# them whatever else runs (uncapped, a CPU hog beside the suite made one node 0.68; both
# capped with --cpus, the 100 ms quota periods tilted scores to 0.62-0.69).
EVEN_CPUSET = "0"


def test_a_node_whose_cpu_is_capped_is_named_a_straggler(make_hosts_yaml: Callable[..., Path],
                                                          tmp_path: Path) -> None:
    run_id = "straggler-capped"
    hosts = make_hosts_yaml()
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--straggler-threshold",
                               str(SITE_THRESHOLD), "--fix-hp", f"{TINY},epochs=2,max_steps={STEPS}", case=CASE)) as proc:
        wait_running(run_id, 2, proc=proc)
        wait_for_step(work_dir(hosts), rank=1)
        capped = docker("update", "--cpus", CAPPED_CPUS, node_container(run_id, 1))
        assert capped.returncode == 0, capped.stderr
        stdout, stderr = proc.communicate(timeout=1200)  # a deadline, not a speed
    assert proc.returncode == 0, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1", case=CASE)
    assert [r["rank"] for r in result["ranks"]] == [0, 1]
    [straggler] = result["stragglers"]
    assert (straggler["rank"], straggler["host"]) == (1, "node2")
    assert straggler["score"] < result["straggler_threshold"] == SITE_THRESHOLD
    assert straggler["fastest_compute_s_p50"] < straggler["compute_s_p50"]
    assert "no device monitor for this vendor" in straggler["why"], straggler["why"]
    verdicts = {v["node_rank"]: v for v in result["node_verdicts"]}
    assert verdicts[0]["verdict"] == "ok" and verdicts[1]["verdict"] == "slow"
    # The terminal names the flagged node under the table, once.
    flagged = [line for line in stdout.splitlines() if "node 1 (node2" in line and ": slow (rank 1" in line]
    assert len(flagged) == 1, stdout
    report = (tmp_path / run_id / CASE / "2x1" / "report.html").read_text()
    assert "Stragglers" in report and "node 1 (node2" in report
    notes = (tmp_path / run_id / CASE / "2x1" / "README.md").read_text()
    assert "node 0 (node1" in notes and ": ok" in notes and ": slow (rank 1" in notes


def test_the_same_run_on_even_nodes_names_no_straggler(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "straggler-none"
    hosts = make_hosts_yaml(cluster_overrides={"straggler_threshold": SITE_THRESHOLD})
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp",
                               f"{TINY},epochs=2,max_steps={STEPS}", case=CASE)) as proc:
        wait_running(run_id, 2, proc=proc)
        for node_rank in (0, 1):
            capped = docker("update", "--cpuset-cpus", EVEN_CPUSET, node_container(run_id, node_rank))
            assert capped.returncode == 0, capped.stderr
        stdout, stderr = proc.communicate(timeout=1200)  # a deadline, not a speed
    assert proc.returncode == 0, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1", case=CASE)
    assert result["straggler_threshold"] == SITE_THRESHOLD
    assert result["stragglers"] == [] and result["input_bound"] == [], [
        (r["rank"], r["compute_s_p50"]) for r in result["ranks"]]
    assert [v["verdict"] for v in result["node_verdicts"]] == ["ok", "ok"]
    for rank in result["ranks"]:
        assert rank["steps"] == STEPS and rank["compute_s_p50"] > 0 and rank["comm_s_p50"] is not None
    assert "slow (" not in stdout
