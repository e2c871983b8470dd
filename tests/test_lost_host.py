"""A host lost mid-run costs only itself; a short SSH blip costs nothing.

Node 1 runs on a throwaway sshd (tests/spare_sshd.py) that the test stops for
real: its listener and every session are killed, so the controller's connection
drops. The container itself keeps running (the engine is the machine's), as a
real host's would when only its network is gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from test_faults import (
    CASE,
    HELD,
    HELD_CASE,
    HELD_STEPS,
    LONG,
    bench_argv,
    containers_of,
    controller,
    hold_training,
    wait_for_step,
    wait_running,
    work_dir,
)

from harness import REPO_ROOT
from harness.report.history import HISTORY_FILE
from harness.report.history import runs as history_runs

pytest_plugins = ["spare_sshd"]
if TYPE_CHECKING:
    from conftest import TestInfra
    from spare_sshd import SpareSshd


def two_hosts(make_hosts_yaml: Callable[..., Path], spare: SpareSshd, infra: TestInfra, tmp_path: Path,
              **cluster: Any) -> Path:
    known = spare.known_hosts_file(tmp_path / "known_hosts", include=infra.known_hosts)
    return make_hosts_yaml(hosts=["node1"], extra_hosts=[spare.inventory_entry("beta")],
                           cluster_overrides={"known_hosts": str(known), **cluster})


def test_lost_host_is_infra_and_the_others_are_collected(make_hosts_yaml: Callable[..., Path], tmp_path: Path,
                                                          infra: TestInfra, spare_sshd: Callable[..., Any]) -> None:
    run_id = "fault-lost-host"
    spare: SpareSshd = spare_sshd()
    hosts = two_hosts(make_hosts_yaml, spare, infra, tmp_path, host_lost_s=10)
    results = tmp_path / "results"
    with controller(bench_argv(hosts, results, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_running(run_id, 2, proc=proc)
        wait_for_step(work_dir(hosts), rank=1)
        spare.stop()
        stdout, stderr = proc.communicate(timeout=240)  # a deadline: LONG trains far longer
        assert proc.returncode == 1, stdout + stderr
        out = results / run_id / CASE / "2x1"
        result = json.loads((out / "results.json").read_text())
        assert result["status"] == "failed" and result["failure_kind"] == "infra"
        assert result["lost_hosts"] == ["beta"] and "host lost" in result["failure"]
        # the loss leads; node 0's rank, stopped by the harness afterwards, is not the first failure
        lines = result["failure"].splitlines()
        assert lines[0].startswith("host lost") and "node 1 (beta)" in lines[0], result["failure"]
        assert not any(line.startswith(("first failure", "rank 0: Terminated")) for line in lines), result["failure"]
        assert any("beta" in item and f"runs/{run_id}/node1" in item for item in result["left_on_hosts"])
        assert (out / "node1_noderank0" / "container" / "events_rank0.log").is_file()
        assert (out / "README.md").is_file() and (out / "report.html").is_file()
        assert [(r.run_id, r.status) for r in history_runs(results / HISTORY_FILE)] == [(run_id, "failed")]
        assert "python -m harness collect" in stderr
        # node 0's container is gone; the lost host's is still there (nobody could reach it)
        left = containers_of(run_id)
        assert len(left) == 1
        assert subprocess.run(["docker", "inspect", "--format", '{{index .Config.Labels "bench.host"}}', left[0]],
                              capture_output=True, text=True, check=True).stdout.strip() == "beta"

        spare.start()  # the host is back: finish the job
        collect = subprocess.run([sys.executable, "-m", "harness", "collect", run_id, "--hosts", str(hosts),
                                  "--results", str(results)], cwd=REPO_ROOT, capture_output=True, text=True,
                                 timeout=180, check=False)
        assert collect.returncode == 0, collect.stdout + collect.stderr
        again = results / run_id / "collected" / "beta_noderank1"
        assert (again / "container" / "events_rank1.log").is_file() and (again / "container.log").is_file()
        assert containers_of(run_id) == []
        assert not list(work_dir(hosts).glob(f"beta/runs/{run_id}/node1"))


def test_short_ssh_blip_is_survived(make_hosts_yaml: Callable[..., Path], tmp_path: Path, infra: TestInfra,
                                    spare_sshd: Callable[..., Any]) -> None:
    run_id = "fault-blip"
    spare: SpareSshd = spare_sshd()
    hosts = two_hosts(make_hosts_yaml, spare, infra, tmp_path)
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", f"{HELD},max_steps={HELD_STEPS}",
                               case=HELD_CASE)) as proc:
        wait_running(run_id, 2, proc=proc)
        with hold_training(run_id, work_dir(hosts), HELD_STEPS):
            spare.stop()
            time.sleep(3)
            spare.start()
            assert proc.poll() is None and containers_of(run_id, running=True), "the run ended before the blip was over"
        stdout, stderr = proc.communicate(timeout=1200)  # a deadline, not a speed (a loaded CI machine is slow)
    assert proc.returncode == 0, stdout + stderr
    out = tmp_path / run_id / HELD_CASE / "2x1"
    result = json.loads((out / "results.json").read_text())
    assert result["status"] == "success" and result["metrics"]["steps"] == HELD_STEPS
    assert (out / "beta_noderank1" / "container" / "events_rank1.log").is_file()
    assert containers_of(run_id) == []
