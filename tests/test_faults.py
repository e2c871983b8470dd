"""The night's faults, injected for real into runs on the two test hosts: a hung
node (docker pause), a frozen Docker engine, a full results disk, SIGHUP and
SIGKILL of the controller, a container planting files, a secret in the
inventory, a bad or re-used run id. Each asserts the exit status, results.json,
the logs that came back and that no container of the run is left.

(A host lost mid-run and an SSH blip are in tests/test_lost_host.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hostkit import RANK_ENV

from harness import REPO_ROOT
from harness.report.history import HISTORY_FILE
from harness.report.history import runs as history_runs

if TYPE_CHECKING:
    from conftest import TestInfra

# The tests test the harness, not a model: the smallest image case, whose runs start a few
# seconds sooner than resnet50's (a smaller model to build and to broadcast). At bs=2 and 32 px
# mobilenetv2's last BatchNorm sees 2 values per channel and its loss turns NaN within a dozen
# steps (which the harness stops as a job failure): bs=4 and a small lr keep it finite.
CASE = "mobilenetv2"
TINY = "bs=4,image_size=32,num_classes=10,lr=0.001"
LONG = f"{TINY},epochs=1000"  # runs until stopped
# A run that must outlive a fault: hold_training() pauses its node 0 for the fault's
# length, so it cannot end meanwhile whatever the machine's speed. mobilenetv2 steps
# about 20x faster than resnet50 here; HELD_STEPS of them (about 10 s on 2 busy cores)
# are the margin for rank 0 to be paused before it trains them all: a 0.1 s poll and
# a `docker pause` against the steps after rank 1's first.
HELD_CASE = CASE
HELD_STEPS = 200
HELD = LONG


def bench_argv(hosts: Path, results: Path, run_id: str, *args: str, case: str = CASE) -> list[str]:
    return [sys.executable, "-m", "harness", "bench", "--case", case, "--vendor", "cpu",
            "--hosts", str(hosts), "--results", str(results), "--run-id", run_id, *args]


def bench(hosts: Path, results: Path, run_id: str, *args: str, timeout: float = 600,
          env: dict[str, str] | None = None, case: str = CASE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bench_argv(hosts, results, run_id, *args, case=case), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False, env={**os.environ, **(env or {})})


def docker(*args: str, engine: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"DOCKER_HOST": engine} if engine else {})}
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)


def containers_of(run_id: str, engine: str | None = None, running: bool = False) -> list[str]:
    args = ["ps", "-q" if running else "-aq", "--filter", f"label=bench.run_id={run_id}"]
    listed = docker(*args, engine=engine)
    assert listed.returncode == 0, listed.stderr  # an engine that did not answer lists nothing: not "none left"
    return listed.stdout.split()


def wait_running(run_id: str, count: int, engine: str | None = None, limit_s: float = 240,
                 proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        running = len(containers_of(run_id, running=True)) + (len(containers_of(run_id, engine, True)) if engine else 0)
        if running >= count:
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the controller ended ({proc.returncode}) before {count} container(s) ran:\n"
                                 + "".join(proc.communicate()))
        time.sleep(0.5)
    raise AssertionError(f"{count} container(s) of {run_id} never ran")


def steps_logged(run_dir: Path, rank: int) -> int:
    """The steps in rank's event log (on the host, under the node's work dir)."""
    return max((log.read_text(errors="replace").count('"key": "step"') for log in run_dir.glob(f"**/events_rank{rank}.log")),
               default=0)


def wait_for_step(run_dir: Path, rank: int = 0, limit_s: float = 240, poll_s: float = 0.5) -> None:
    """Until rank's event log (on the host, under the node's work dir) shows a step."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if steps_logged(run_dir, rank):
            return
        time.sleep(poll_s)
    raise AssertionError(f"rank {rank} never reached a step under {run_dir}")


def node_container(run_id: str, node_rank: int, engine: str | None = None) -> str:
    """The running container of the run's node `node_rank` on `engine`."""
    found = [c for c in containers_of(run_id, engine, running=True)
             if docker("inspect", "--format", '{{index .Config.Labels "bench.node_rank"}}', c,
                       engine=engine).stdout.strip() == str(node_rank)]
    assert len(found) == 1, f"node {node_rank} of {run_id}: containers {found}"
    return found[0]


@contextmanager
def hold_training(run_id: str, run_dir: Path, max_steps: int) -> Iterator[None]:
    """Once rank 1 trains, node 0's container (on this machine's engine) is paused
    until the block ends: the run, in the middle of its training, cannot end while a
    fault is on, however fast the machine. Rank 1 waits in its next all-reduce."""
    wait_for_step(run_dir, rank=1, poll_s=0.1)
    node0 = node_container(run_id, 0)
    assert docker("pause", node0).returncode == 0
    try:
        assert steps_logged(run_dir, 0) < max_steps, f"rank 0 trained all {max_steps} steps before its pause"
        yield
    finally:
        docker("unpause", node0)


def wait_for_output(proc: subprocess.Popen[str], pattern: re.Pattern[str], limit_s: float = 120) -> str:
    """Read the controller's stderr until a line matches; returns what was read."""
    assert proc.stderr is not None
    read: list[str] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            read.append(line)
            if pattern.search(line):
                found.set()
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    if not found.wait(limit_s):
        raise AssertionError(f"no line matching {pattern.pattern!r} within {limit_s:.0f} s:\n" + "".join(read))
    return "".join(read)


def results_of(results: Path, run_id: str, config: str, case: str = CASE) -> dict:
    return json.loads((results / run_id / case / config / "results.json").read_text())


def work_dir(hosts_yaml: Path) -> Path:
    import yaml

    return Path(yaml.safe_load(hosts_yaml.read_text())["hosts"][0]["work_dir"]).parent


@contextmanager
def controller(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """The controller in the background; whatever a failing test leaves of its run is removed."""
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    run_id = argv[argv.index("--run-id") + 1]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        for engine in (None, "unix:///run/bench-engine2/docker.sock"):
            for cid in containers_of(run_id, engine):
                docker("rm", "--force", cid, engine=engine)


def test_hung_node_is_stopped_as_stalled_with_stacks(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "fault-stall"
    hosts = make_hosts_yaml()
    # resnet50: its steps are long, so the pause lands inside one (mobilenetv2's are so short that
    # it may land in a barrier while the other rank's Python frame shows only `step`: the
    # gradient all-reduce of its backward runs in C++, and the triage could not tell it waits).
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG,
                               "--stall-timeout", "15", case="resnet50")) as proc:
        wait_running(run_id, 2, proc=proc)
        wait_for_step(work_dir(hosts), rank=1)
        assert docker("pause", node_container(run_id, 1)).returncode == 0
        stdout, stderr = proc.communicate(timeout=180)  # a deadline: the 24 h limit would never come
    assert proc.returncode == 1, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1", case="resnet50")
    assert result["status"] == "failed" and result["failure_kind"] == "stalled"
    assert "stalled: no progress for 15 s" in result["failure"] and "rank " in result["failure"]
    # where the ranks hung leads: node 1's rank 1 apart from the others, or both ranks in one place
    lines = result["failure"].splitlines()
    assert lines[0].startswith("hung apart from the others: rank 1 (node2) in ") or \
        lines[0].startswith("all 2 ranks wait in one place: "), result["failure"]
    assert "frozen (paused or stopped) when the stall was found: node 1 (node2)" in lines, result["failure"]
    assert result["hang"] and result["hang"]["groups"] and result["hang"]["missing_ranks"] == [], result["hang"]
    assert result["hang"]["frozen_nodes"] == ["node 1 (node2)"]
    out = tmp_path / run_id / "resnet50" / "2x1"
    for node, rank in (("node1_noderank0", 0), ("node2_noderank1", 1)):
        assert (out / node / "container.log").is_file()
        assert (out / node / "container" / f"events_rank{rank}.log").is_file()
        stacks = (out / node / "container" / f"stacks_rank{rank}.log").read_text()
        assert "File " in stacks and "driver.py" in stacks, stacks[-2000:]
    assert [(r.run_id, r.status) for r in history_runs(tmp_path / HISTORY_FILE)] == [(run_id, "failed")]
    assert containers_of(run_id) == []


def test_frozen_engine_for_longer_than_a_poll_is_survived(make_hosts_yaml: Callable[..., Path], tmp_path: Path,
                                                          infra: TestInfra) -> None:
    run_id = "fault-engine-freeze"
    engine = infra.second_engine
    pid = int(Path("/run/bench-engine2/docker.pid").read_text().strip())
    hosts = make_hosts_yaml(cluster_overrides={"host_lost_s": 120})
    text = hosts.read_text().replace("name: node2\n", f"name: node2\n  docker_host: {engine}\n")
    hosts.write_text(text)
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", f"{HELD},max_steps={HELD_STEPS}",
                               case=HELD_CASE)) as proc:
        wait_running(run_id, 2, engine=engine, limit_s=400, proc=proc)
        with hold_training(run_id, work_dir(hosts), HELD_STEPS):
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(16)  # longer than the poll's 10 s docker timeout
            finally:
                os.kill(pid, signal.SIGCONT)
            assert proc.poll() is None and containers_of(run_id, running=True), "the run ended before the fault was over"
        stdout, stderr = proc.communicate(timeout=1200)  # a deadline, not a speed (a loaded CI machine is slow)
    assert proc.returncode == 0, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1", case=HELD_CASE)
    assert result["status"] == "success" and result["metrics"]["steps"] == HELD_STEPS
    assert containers_of(run_id) == [] and containers_of(run_id, engine) == []


def test_full_results_disk_is_one_clear_error(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "fault-disk-full"
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True, timeout=30)
    try:
        (mount / "filler").write_bytes(b"\0" * 60 * 1024)
        proc = bench(make_hosts_yaml(), mount, run_id, "--config", "2x1", "--fix-hp", f"{TINY},max_steps=3")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "No space left on device" in proc.stderr
    assert "logs still on the hosts" in proc.stderr and f"runs/{run_id}/node" in proc.stderr
    assert containers_of(run_id) == []


def test_sighup_stops_collects_and_records(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "fault-sighup"
    hosts = make_hosts_yaml()
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_running(run_id, 2, proc=proc)
        wait_for_step(work_dir(hosts), rank=0)
        progress = wait_for_output(proc, re.compile(r"training: node 0 \(\S+\): epoch \d+ step \d+/\d+ · [\d,.]+ samples/s"))
        proc.send_signal(signal.SIGHUP)
        stdout, stderr = proc.communicate(timeout=120)
    stderr = progress + stderr  # live progress in a log, as soon as the first step is read
    assert proc.returncode == 130, stdout + stderr
    result = results_of(tmp_path, run_id, "2x1")
    assert result["failure_kind"] == "interrupted"
    out = tmp_path / run_id / CASE / "2x1"
    assert (out / "README.md").is_file() and (out / "report.html").is_file()
    assert [r.run_id for r in history_runs(tmp_path / HISTORY_FILE)] == [run_id]
    assert containers_of(run_id) == []


def test_killed_controller_leaves_orphans_that_the_next_run_refuses(make_hosts_yaml: Callable[..., Path],
                                                                     tmp_path: Path) -> None:
    run_id, next_id = "fault-sigkill", "fault-after-sigkill"
    hosts = make_hosts_yaml()
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_running(run_id, 2, proc=proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert len(containers_of(run_id)) == 2
        refused = bench(hosts, tmp_path, next_id, "--config", "2x1", "--fix-hp", f"{TINY},max_steps=2")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert run_id in refused.stderr and "--clean-orphans" in refused.stderr
        assert not (tmp_path / next_id).exists() and containers_of(next_id) == []
        assert list(work_dir(hosts).glob(f"*/runs/{next_id}")) == []  # the checks' folders went with the refusal
        assert len(list(work_dir(hosts).glob(f"*/runs/{run_id}/node*"))) == 2  # the killed run's stay
        cleaned = bench(hosts, tmp_path, next_id, "--config", "2x1", "--fix-hp", f"{TINY},max_steps=2",
                        "--clean-orphans")
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert "orphaned" in cleaned.stderr
        assert containers_of(run_id) == [] and containers_of(next_id) == []


def test_clean_without_run_id_spares_running_containers(make_hosts_yaml: Callable[..., Path],
                                                        infra: TestInfra) -> None:
    run_id = "fault-clean-live"
    live = docker("run", "--detach", "--net=host", "--label", f"bench.run_id={run_id}", "--name", f"bench-{run_id}-n0",
                  infra.base_image, "sleep", "300").stdout.strip()
    dead = docker("run", "--detach", "--net=host", "--label", f"bench.run_id={run_id}", "--name", f"bench-{run_id}-n1",
                  infra.base_image, "true").stdout.strip()
    # on the same engine, labelled for a host outside the inventory (a Slurm node's): not clean's
    other = docker("run", "--detach", "--net=host", "--label", f"bench.run_id={run_id}", "--label", "bench.host=n9",
                   "--name", f"bench-{run_id}-n9", infra.base_image, "true").stdout.strip()
    try:
        docker("wait", dead)
        docker("wait", other)
        hosts = make_hosts_yaml()
        clean = [sys.executable, "-m", "harness", "clean", "--hosts", str(hosts)]
        spare = subprocess.run(clean, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert spare.returncode == 0, spare.stderr
        assert sorted(containers_of(run_id)) == sorted([live[:12], other[:12]])
        assert "left running" in spare.stderr
        every = subprocess.run([*clean, "--all"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert every.returncode == 0 and containers_of(run_id) == [other[:12]]
    finally:
        docker("rm", "--force", live, dead, other)


def test_planted_files_cannot_overwrite_or_escape(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "fault-planted"
    hosts = make_hosts_yaml()
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host file that must not be collected\n")
    with controller(bench_argv(hosts, tmp_path / "results", run_id, "--config", "2x1",
                               "--fix-hp", f"{TINY},max_steps=30")) as proc:
        wait_running(run_id, 2, proc=proc)
        # What the container writes lands in the node's run folder on the host (a bind mount).
        logs = next(work_dir(hosts).glob(f"node1/runs/{run_id}/node0/logs"))
        (logs / "monitor.csv").write_text("planted by the container\n")
        (logs / "container.json").write_text("planted\n")
        (logs / "leak").symlink_to(secret)
        (logs / "leakdir").symlink_to(tmp_path)
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    node = tmp_path / "results" / run_id / CASE / "2x1" / "node1_noderank0"
    assert (node / "monitor.csv").read_text().startswith("time") or "planted" not in (node / "monitor.csv").read_text()
    assert (node / "container" / "monitor.csv").read_text() == "planted by the container\n"
    assert json.loads((node / "container.json").read_text())[0]["Name"].endswith("-n0")
    assert not (node / "container" / "leak").exists() and not (node / "container" / "leakdir").exists()
    collected = [p.read_text(errors="replace") for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert not any("host file that must not be collected" in text for text in collected)


def test_secrets_never_land_in_the_results(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "fault-secrets"
    token, from_env = "tok-5f1e9a77c2d34b", "env-9c8d7e6f5a4b3c"
    hosts = make_hosts_yaml(cluster_overrides={"env": {
        "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": "/opt/bench-site", **RANK_ENV,
        "HF_TOKEN": token, "WANDB_API_KEY": {"from_env": "BENCH_TEST_SECRET"}}})
    results = tmp_path / "results"
    proc = bench(hosts, results, run_id, "--config", "2x1", "--fix-hp", f"{TINY},max_steps=2",
                 env={"BENCH_TEST_SECRET": from_env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in results.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert token not in text and from_env not in text, path
    assert token not in proc.stdout + proc.stderr and from_env not in proc.stdout + proc.stderr
    container_json = (results / run_id / CASE / "2x1" / "node1_noderank0" / "container.json").read_text()
    assert "HF_TOKEN=***" in container_json and "WANDB_API_KEY=***" in container_json
    missing = bench(hosts, results, "fault-secrets-missing", "--config", "2x1")
    assert missing.returncode == 2 and "BENCH_TEST_SECRET" in missing.stderr
    assert not (results / "fault-secrets-missing").exists()


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "x" * 200])
def test_unsafe_run_id_is_refused_before_anything(make_hosts_yaml: Callable[..., Path], tmp_path: Path,
                                                  bad: str) -> None:
    proc = bench(make_hosts_yaml(), tmp_path / "results", bad, "--config", "2x1")
    assert proc.returncode == 2 and "RUN_ID" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "x").exists()


def test_reused_run_id_is_refused(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "fault-reused"
    (tmp_path / run_id).mkdir()
    proc = bench(make_hosts_yaml(), tmp_path, run_id, "--config", "2x1")
    assert proc.returncode == 2 and run_id in proc.stderr and "exists" in proc.stderr, proc.stderr
    assert list((tmp_path / run_id).iterdir()) == []


def test_an_image_that_cannot_be_built_is_recorded_as_infra(make_hosts_yaml: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    run_id = "fault-no-base-image"
    # Nothing can be pulled here: the build fails on its FROM line, after preflight.
    hosts = make_hosts_yaml()
    proc = bench(hosts, tmp_path, run_id, "--config", "2x1", "--param", "base_image=bench-missing/none:0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    result = results_of(tmp_path, run_id, "2x1")
    assert result["status"] == "failed" and result["failure_kind"] == "infra"
    assert result["failure"].startswith("image failed") and "bench-missing/none:0" in result["failure"]
    out = tmp_path / run_id / CASE / "2x1"
    assert (out / "README.md").is_file() and (out / "report.html").is_file()
    assert [(r.run_id, r.status) for r in history_runs(tmp_path / HISTORY_FILE)] == [(run_id, "failed")]
    assert containers_of(run_id) == []
    assert not list(work_dir(hosts).glob("*/build/*")), "a failed build leaves no context behind"
