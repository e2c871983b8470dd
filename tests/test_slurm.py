"""The Slurm backend against the real single-machine cluster of tests/infra/slurm.sh
(slurmctld, and slurmd n1/n2 on 127.0.0.2/127.0.0.3): a 2x2 run through sbatch,
a rank failure, scancel from outside, the controller stopped with SIGTERM, and
the sbatch scripts pinned by golden files. The same end-to-end contract runs on
both backends. Each run asserts the exit status, results.json, the logs that
came back, and that neither a container nor a Slurm job of the run is left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hostkit import RANK_ENV
from test_dry_run import normalise
from test_faults import CASE, LONG, TINY, bench, bench_argv, containers_of, controller, results_of, wait_for_step, wait_running

from harness import REPO_ROOT
from harness.devices.sampler import read_monitor

GOLDEN = Path(__file__).parent / "golden"
SLURM_BACKENDS = ("slurm", "slurm-bare")


def slurm_jobs(run_id: str) -> list[str]:
    """The run's Slurm jobs that are not finished."""
    listed = subprocess.run(["squeue", "--noheader", "--name", f"bench-{run_id}", "--format", "%i"],
                            capture_output=True, text=True, timeout=30, check=True)
    return listed.stdout.split()


def assert_nothing_left(run_id: str, slurm_yaml: Path | None = None) -> None:
    assert containers_of(run_id) == [], "a container of the run is left"
    assert slurm_jobs(run_id) == [], "a Slurm job of the run is left"


def slurm_inventory(backend: str, make_slurm_yaml: Callable[..., Path]) -> Path:
    path = make_slurm_yaml()
    if backend == "slurm-bare":  # no container: torchrun from this machine's venv on each node
        loaded = yaml.safe_load(path.read_text())
        loaded["cluster"].update(payload={"type": "bare", "python": sys.executable}, mounts=[],
                                 env={"GLOO_SOCKET_IFNAME": "lo", **RANK_ENV})
        path.write_text(yaml.safe_dump(loaded))
    return path


# One contract, two tests: the Slurm cluster and the SSH test hosts are each one
# pytest-xdist group's (tests/conftest.py), and those two groups run side by side.
def test_contract_a_2x2_run_end_to_end_over_ssh(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    check_contract("ssh-docker", make_hosts_yaml(), tmp_path)


@pytest.mark.parametrize("backend", SLURM_BACKENDS)
def test_contract_a_2x2_run_end_to_end(backend: str, make_slurm_yaml: Callable[..., Path], tmp_path: Path) -> None:
    check_contract(backend, slurm_inventory(backend, make_slurm_yaml), tmp_path)


def check_contract(backend: str, hosts: Path, tmp_path: Path) -> None:
    run_id = f"contract-{backend}"
    done = bench(hosts, tmp_path, run_id, "--config", "2x2", "--fix-hp", TINY, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    result = results_of(tmp_path, run_id, "2x2")
    assert result["status"] == "success" and result["failure_kind"] is None
    assert result["metrics"]["p_core"] > 0
    out = tmp_path / run_id / CASE / "2x2"
    folders = sorted(p.name for p in out.glob("*_noderank*"))
    assert [f.rsplit("_", 1)[1] for f in folders] == ["noderank0", "noderank1"]
    for folder, ranks in zip(folders, ((0, 1), (2, 3))):
        for rank in ranks:  # world size 4: every rank's log came back under its node
            assert (out / folder / "container" / f"events_rank{rank}.log").is_file(), (folder, rank)
        assert (out / folder / "container.log").is_file()
        # Each node's monitor: one long-lived command per node (over SSH, or as an srun step)
        host_rows = [row.host_sample for row in read_monitor(out / folder / "monitor.csv") if row.kind == "host"]
        assert host_rows and all(row is not None and row.mem_total_gib for row in host_rows), folder
    # Only rank 0 echoes its events; the other node's output may be empty.
    assert ":::BENCH " in (out / folders[0] / "container.log").read_text()
    assert "p_core" in done.stdout and run_id in done.stdout  # the table
    if backend.startswith("slurm"):
        assert [f.split("_")[0] for f in folders] == ["n1", "n2"]  # the allocated nodes' names
        assert "sbatch --parsable" in (out / "plan.txt").read_text()
        batch_output = (out / "slurm.out").read_text()  # the batch script's own account
        assert "Slurm job" in batch_output and "srun exit status 0" in batch_output
        assert result["allocation"].startswith("Slurm job ") and "n1, n2" in result["allocation"]
        assert f"allocated: {result['allocation']}" in done.stderr
        assert result["allocation"] in (out / "plan.txt").read_text()
    if backend == "slurm-bare":
        assert "docker" not in (out / "plan.txt").read_text() and "packages sha256:" in result["image"]
    assert_nothing_left(run_id)


def test_a_failing_rank_is_a_job_failure(make_slurm_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "slurm-rank-fails"
    done = bench(make_slurm_yaml(), tmp_path, run_id, "--config", "2x2",
                 "--fix-hp", f"{TINY},fail_rank=3,fail_step=1", timeout=400)
    assert done.returncode == 1, done.stdout + done.stderr
    result = results_of(tmp_path, run_id, "2x2")
    assert result["failure_kind"] == "job"
    assert result["failure"].startswith("first failure: rank 3")
    node = tmp_path / run_id / CASE / "2x2" / "n2_noderank1"
    assert "injected failure" in (node / "container" / "events_rank3.log").read_text()
    assert_nothing_left(run_id)


def test_scancel_from_outside_stops_every_container_and_is_infra(make_slurm_yaml: Callable[..., Path],
                                                                 tmp_path: Path) -> None:
    run_id = "slurm-scancel"
    with controller(bench_argv(make_slurm_yaml(), tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_running(run_id, 2, proc=proc)
        time.sleep(3)
        subprocess.run(["scancel", "--name", f"bench-{run_id}"], check=True, timeout=30)
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1")
    assert result["failure_kind"] == "infra" and "CANCELLED" in result["failure"], result["failure"]
    out = tmp_path / run_id / CASE / "2x1"
    # Each task saved its container's log and state before removing it.
    for folder in ("n1_noderank0", "n2_noderank1"):
        assert (out / folder / "container.json").is_file() and (out / folder / "container.log").is_file()
    assert_nothing_left(run_id)


def test_sigterm_to_the_controller_cancels_the_job_and_records(make_slurm_yaml: Callable[..., Path],
                                                               tmp_path: Path) -> None:
    run_id = "slurm-sigterm"
    inventory = make_slurm_yaml()
    with controller(bench_argv(inventory, tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_running(run_id, 2, proc=proc)
        # The nodes' work_dir is shared with this machine (tests/infra/slurm.sh): rank 0's log shows a step.
        wait_for_step(Path(yaml.safe_load(inventory.read_text())["cluster"]["slurm"]["work_dir"]), rank=0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1")
    assert result["failure_kind"] == "interrupted"
    out = tmp_path / run_id / CASE / "2x1"
    assert (out / "n1_noderank0" / "container" / "events_rank0.log").is_file()
    assert_nothing_left(run_id)


def test_a_bad_slurm_section_is_one_clear_error(make_slurm_yaml: Callable[..., Path], tmp_path: Path) -> None:
    path = make_slurm_yaml({"work_dir": "relative/dir", "partitions": "typo"})
    done = bench(path, tmp_path, "slurm-bad-input", "--config", "2x1", "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(path) in done.stderr and "cluster.slurm" in done.stderr and "work_dir" in done.stderr
    missing = bench(make_slurm_yaml({"partition": "nosuch"}), tmp_path, "slurm-no-partition", "--config", "2x1")
    assert missing.returncode == 2 and "partition nosuch" in missing.stderr, missing.stderr
    assert not (tmp_path / "slurm-no-partition").exists()
    # More nodes than the partition has: Slurm's own verdict (sbatch --test-only), nothing submitted.
    too_many = bench(make_slurm_yaml(), tmp_path, "slurm-too-many", "--config", "3x1")
    assert too_many.returncode == 2 and "has 2" in too_many.stderr, too_many.stderr
    limited = bench(make_slurm_yaml({"sbatch_args": ["--nodelist=n9"]}), tmp_path, "slurm-refused", "--config", "2x1")
    assert limited.returncode == 2 and "Slurm refuses the job" in limited.stderr, limited.stderr
    assert slurm_jobs("slurm-refused") == [] and not (tmp_path / "slurm-refused").exists()


@pytest.mark.parametrize("name", ["slurm_2x8", "slurm_2x8_pyxis"])
def test_dry_run_sbatch_scripts_match_golden(name: str) -> None:
    env = {**os.environ, "BENCH_TEST_HF_TOKEN": "never-shown"}
    done = subprocess.run([sys.executable, "-m", "harness", "bench", "--case", "resnet50", "--vendor", "nvidia",
                           "--config", "2x8", "--hosts", str(GOLDEN / f"{name}.yaml"), "--dry-run",
                           "--run-id", "20261125-000000-abcdef"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "never-shown" not in done.stdout + done.stderr
    text = re.sub(r"bench/nvidia:[0-9a-f]{16}", "bench/nvidia:<content-hash>", normalise(done.stdout))
    golden = GOLDEN / f"dry_run_{name}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_a_campaign_runs_through_slurm(make_slurm_yaml: Callable[..., Path], tmp_path: Path) -> None:
    """A suite on the Slurm inventory: validated, run through sbatch twice (repeats),
    summarised; a job needing more nodes than the partition has is refused first."""
    from test_campaign_e2e import campaign_argv, state_of, write_suite

    hosts = make_slurm_yaml()
    name = f"slurmcamp{os.getpid()}"
    bad = write_suite(tmp_path, name, hosts, [{"case": CASE, "config": "2x1", "fix_hp": TINY},
                                              {"case": CASE, "config": "2x1", "fix_hp": "bz=2"}])
    refused = subprocess.run(campaign_argv(bad, tmp_path / "results"), cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "bz" in refused.stderr, refused.stdout + refused.stderr
    suite = write_suite(tmp_path, name, hosts, [{"case": CASE, "config": "2x1", "fix_hp": TINY, "repeats": 2}])
    done = subprocess.run(campaign_argv(suite, tmp_path / "results"), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    state = state_of(tmp_path / "results", name)
    assert [u["status"] for u in state["units"]] == ["success", "success"]
    for unit in state["units"]:
        run_id = unit["attempts"][0]["run_id"]
        assert (tmp_path / "results" / run_id / CASE / "2x1" / "n2_noderank1" / "container.log").is_file()
        assert_nothing_left(run_id)
    assert list((tmp_path / "results" / "campaigns" / name).glob("*/summary.md"))


def test_slurms_time_limit_is_a_timeout(make_slurm_yaml: Callable[..., Path], tmp_path: Path) -> None:
    """sbatch --time 0:20 (minutes:seconds): Slurm ends the job once its periodic
    check sees the limit passed (TIMEOUT, within about 30 s more); every task
    stops and saves its container, and the run is recorded as `timeout`."""
    run_id = "slurm-time-limit"
    done = bench(make_slurm_yaml({"time_limit": "0:20"}), tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG,
                 timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    result = results_of(tmp_path, run_id, "2x1")
    assert result["failure_kind"] == "timeout" and "TIMEOUT" in result["failure"], result["failure"]
    assert (tmp_path / run_id / CASE / "2x1" / "n1_noderank0" / "container.json").is_file()
    assert_nothing_left(run_id)


def test_env_diff_on_a_slurm_inventory_captures_the_nodes(make_slurm_yaml: Callable[..., Path]) -> None:
    """No host list: the partition's nodes are allocated for the capture, compared, released."""
    page = REPO_ROOT / "tests" / "fixtures" / "vendor_pages" / "nvidia-resnet50.md"
    done = subprocess.run([sys.executable, "-m", "harness", "env", "diff", str(page), "--hosts",
                           str(make_slurm_yaml())], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # this machine is no A100 host: drift
    assert "n1 vs" in done.stdout and "n2 vs" in done.stdout
    assert "no drift" not in done.stdout
    assert not [job for job in slurm_jobs("env-capture")], "the capture's allocation is left"
