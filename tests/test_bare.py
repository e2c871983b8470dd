"""The bare payload for real: torchrun started from this machine's venv on the two
SSH test hosts (both on this machine) and through the local access (no SSH), no
container. The same contract as the Docker payload's (world size, every rank's
events under its node, the table, nothing left), then the night's faults:
a crashing rank, a paused node (kill -STOP), a lost host, SIGTERM and SIGKILL to
the controller, a Python without torch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hostkit import RANK_ENV
from test_faults import CASE, LONG, TINY, bench, bench_argv, controller, wait_for_step, work_dir

from harness import REPO_ROOT

pytest_plugins = ["spare_sshd"]
if TYPE_CHECKING:
    from conftest import TestInfra
    from spare_sshd import SpareSshd

# The test hosts are this machine: its venv has torch (the cpu vendor's image borrows it too).
PYTHON = sys.executable
BARE_PAYLOAD = {"type": "bare", "python": PYTHON}
BARE = {"backend": "ssh", "payload": BARE_PAYLOAD, "env": {"GLOO_SOCKET_IFNAME": "lo", **RANK_ENV},
        "mounts": []}


def run_processes(run_id: str) -> dict[int, dict[str, str]]:
    """pid -> BENCH_* variables of every process of the run on this machine."""
    found: dict[int, dict[str, str]] = {}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            items = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(item.decode(errors="replace").partition("=")[::2] for item in items if item.startswith(b"BENCH_"))
        if env.get("BENCH_RUN_ID") == run_id:
            found[int(environ.parent.name)] = env
    return found


def wait_nodes_running(run_id: str, count: int, proc: subprocess.Popen[str], limit_s: float = 240) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if len({env.get("BENCH_NODE_RANK") for env in run_processes(run_id).values()}) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the controller ended ({proc.returncode}) before {count} node(s) ran:\n"
                                 + "".join(proc.communicate()))
        time.sleep(0.3)
    raise AssertionError(f"{count} node(s) of {run_id} never ran")


def wait_gone(run_id: str, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while run_processes(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run_processes(run_id) == {}, "processes of the run are left"


@pytest.fixture
def kill_run_processes() -> Any:
    """Whatever a failing test leaves of its runs' processes is killed."""
    runs: list[str] = []
    yield runs.append
    for run_id in runs:
        for pid in run_processes(run_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def local_inventory(tmp_path: Path, master_port: int, **payload: str) -> Path:
    """This machine as the one host of a bare run; `payload` is merged over the payload section."""
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": {**BARE, "backend": "local", "master_port": master_port,
                    "payload": {**BARE_PAYLOAD, **payload}},
        "hosts": [{"name": "here", "address": "127.0.0.1", "transport": "local", "devices": 2,
                   "work_dir": str(tmp_path / "work")}]}))
    return path


def assert_contract(proc: subprocess.CompletedProcess[str], out: Path, world: int, nodes: list[str],
                    run_id: str) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert result["status"] == "success" and result["left_on_hosts"] == []
    assert f"world size {world}" in proc.stdout + proc.stderr and "p_core" in proc.stdout
    per_node = world // len(nodes)
    for rank in range(world):
        node = rank // per_node
        assert (out / f"{nodes[node]}_noderank{node}" / "container" / f"events_rank{rank}.log").is_file()
    assert "torch" in result["image"] and "packages sha256:" in result["image"]  # the Python environment
    assert "payload: bare" in (out / "plan.txt").read_text()
    assert run_processes(run_id) == {}
    return result


def test_ssh_bare_two_nodes(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "bare-ssh-2x2"
    marker = tmp_path / "the-secret-ran-as-code"
    secret = f"tok-$(touch {marker})-en"  # a value is data: never run as shell code, never written down
    hosts = make_hosts_yaml(cluster_overrides={**BARE, "env": {**BARE["env"], "API_TOKEN": {"from_env": "BARE_SECRET"}}})
    proc = bench(hosts, tmp_path, run_id, "--config", "2x2", "--fix-hp", f"{TINY},max_steps=3",
                 env={"BARE_SECRET": secret})
    out = tmp_path / run_id / CASE / "2x2"
    assert_contract(proc, out, 4, ["node1", "node2"], run_id)
    assert not list(work_dir(hosts).glob(f"*/runs/{run_id}/node*")), "a run folder is left"
    assert not marker.exists()
    assert all(secret not in path.read_text(errors="replace") for path in out.rglob("*") if path.is_file())
    assert "API_TOKEN=***" in (out / "plan.txt").read_text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.usefixtures("training_processes")
def test_local_bare_one_node_without_ssh(tmp_path: Path) -> None:
    run_id = "bare-local-1x2"
    hosts = local_inventory(tmp_path, free_port())
    proc = bench(hosts, tmp_path / "results", run_id, "--config", "1x2", "--fix-hp", f"{TINY},max_steps=3")
    assert_contract(proc, tmp_path / "results" / run_id / CASE / "1x2", 2, ["here"], run_id)
    assert not list((tmp_path / "work").glob(f"runs/{run_id}/node*"))


def test_bare_crashing_rank_is_a_job_failure(make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    run_id = "bare-crash"
    proc = bench(make_hosts_yaml(cluster_overrides=BARE), tmp_path, run_id, "--config", "2x1",
                 "--fix-hp", f"{TINY},max_steps=50,fail_rank=1,fail_step=2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = tmp_path / run_id / CASE / "2x1"
    result = json.loads((out / "results.json").read_text())
    assert result["failure_kind"] == "job" and "injected failure at step 2 on rank 1" in result["failure"]
    nodes = {n["node_rank"]: n for n in result["nodes"]}
    assert nodes[1]["exit_code"] not in (0, None) and nodes[0]["exit_code"] != 0  # node 0 stopped, not left
    assert (out / "node2_noderank1" / "container" / "events_rank1.log").is_file()
    assert "injected failure" in (out / "node2_noderank1" / "container.log").read_text()
    assert run_processes(run_id) == {}


def test_bare_paused_node_is_stalled_with_stacks(make_hosts_yaml: Callable[..., Path], tmp_path: Path,
                                                 kill_run_processes: Callable[[str], None]) -> None:
    run_id = "bare-stall"
    kill_run_processes(run_id)
    hosts = make_hosts_yaml(cluster_overrides=BARE)
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG,
                               "--stall-timeout", "15")) as proc:
        wait_nodes_running(run_id, 2, proc)
        wait_for_step(work_dir(hosts), rank=1)
        paused = [pid for pid, env in run_processes(run_id).items() if env["BENCH_NODE_RANK"] == "1"]
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stdout + stderr
    out = tmp_path / run_id / CASE / "2x1"
    result = json.loads((out / "results.json").read_text())
    assert result["failure_kind"] == "stalled", result["failure"]
    assert result["hang"]["frozen_nodes"] == ["node 1 (node2)"], result["hang"]
    assert "most recent call first" in (out / "node2_noderank1" / "container" / "stacks_rank1.log").read_text()
    wait_gone(run_id)


def test_bare_lost_host_is_infra_and_collected_when_back(make_hosts_yaml: Callable[..., Path], tmp_path: Path,
                                                         infra: TestInfra, spare_sshd: Callable[..., Any],
                                                         kill_run_processes: Callable[[str], None]) -> None:
    run_id = "bare-lost-host"
    kill_run_processes(run_id)
    spare: SpareSshd = spare_sshd()
    known = spare.known_hosts_file(tmp_path / "known_hosts", include=infra.known_hosts)
    hosts = make_hosts_yaml(hosts=["node1"], extra_hosts=[spare.inventory_entry("beta")],
                            cluster_overrides={**BARE, "known_hosts": str(known), "host_lost_s": 10})
    results = tmp_path / "results"
    with controller(bench_argv(hosts, results, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_nodes_running(run_id, 2, proc)
        wait_for_step(work_dir(hosts), rank=1)
        spare.stop()
        stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stdout + stderr
    out = results / run_id / CASE / "2x1"
    result = json.loads((out / "results.json").read_text())
    assert result["failure_kind"] == "infra" and result["lost_hosts"] == ["beta"]
    assert any("beta" in item for item in result["left_on_hosts"])
    assert (out / "node1_noderank0" / "container" / "events_rank0.log").is_file()
    # Node 0's processes are stopped; the lost host's run folder stays (its processes may end on their
    # own once their peer is gone: how soon depends on the machine's speed).
    assert "0" not in {env["BENCH_NODE_RANK"] for env in run_processes(run_id).values()}
    assert list(work_dir(hosts).glob(f"beta/runs/{run_id}/node1/logs"))

    spare.start()  # back: collect stops what is left and brings the logs
    collect = subprocess.run([sys.executable, "-m", "harness", "collect", run_id, "--hosts", str(hosts),
                              "--results", str(results)], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=180, check=False)
    assert collect.returncode == 0, collect.stdout + collect.stderr
    again = results / run_id / "collected" / "beta_noderank1"
    assert (again / "container" / "events_rank1.log").is_file() and (again / "container.log").is_file()
    wait_gone(run_id)
    assert not list(work_dir(hosts).glob(f"beta/runs/{run_id}/node1"))


def test_bare_sigterm_to_the_controller_stops_and_records(make_hosts_yaml: Callable[..., Path],
                                                          tmp_path: Path) -> None:
    run_id = "bare-sigterm"
    hosts = make_hosts_yaml(cluster_overrides=BARE)
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_nodes_running(run_id, 2, proc)
        wait_for_step(work_dir(hosts), rank=0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    result = json.loads((tmp_path / run_id / CASE / "2x1" / "results.json").read_text())
    assert "interrupted" in result["failure"] and result["left_on_hosts"] == []
    assert (tmp_path / run_id / CASE / "2x1" / "node2_noderank1" / "container.log").is_file()
    assert run_processes(run_id) == {}


def test_bare_orphans_of_a_killed_controller_are_refused_then_cleaned(
        make_hosts_yaml: Callable[..., Path], tmp_path: Path, kill_run_processes: Callable[[str], None]) -> None:
    run_id = "bare-killed"
    kill_run_processes(run_id)
    hosts = make_hosts_yaml(cluster_overrides=BARE)
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1", "--fix-hp", LONG)) as proc:
        wait_nodes_running(run_id, 2, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the controller and its ssh sessions; the nodes' sessions go on
        proc.communicate(timeout=60)
    assert {env["BENCH_NODE_RANK"] for env in run_processes(run_id).values()} == {"0", "1"}
    refused = bench(hosts, tmp_path, "bare-next", "--config", "2x1", "--fix-hp", f"{TINY},max_steps=2")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"bench-{run_id}-n0" in refused.stderr and "--clean-orphans" in refused.stderr
    assert not (tmp_path / "bare-next").exists()
    clean = subprocess.run([sys.executable, "-m", "harness", "clean", "--hosts", str(hosts), "--run-id", run_id],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    wait_gone(run_id)


def test_bare_python_without_torch_is_refused_in_preflight(make_hosts_yaml: Callable[..., Path],
                                                           tmp_path: Path) -> None:
    python = "/usr/bin/python3"  # the system's interpreter: torch is in the venv only
    lacks = subprocess.run([python, "-c", "import torch"], capture_output=True, check=False)
    if lacks.returncode == 0:
        pytest.skip(f"{python} has torch here")
    hosts = make_hosts_yaml(cluster_overrides={**BARE, "payload": {"type": "bare", "python": python}})
    proc = bench(hosts, tmp_path, "bare-no-torch", "--config", "2x1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "node1" in proc.stderr and python in proc.stderr and "cluster.payload.python" in proc.stderr
    assert "No module named 'torch'" in proc.stderr
    assert not (tmp_path / "bare-no-torch").exists()
    assert run_processes("bare-no-torch") == {}


@pytest.mark.usefixtures("training_processes")
def test_the_gpu_check_script_runs_on_the_cpu_vendor(tmp_path: Path) -> None:
    """bench/gpu_check.sh as a GPU machine would run it (local access, bare payload), on
    the cpu vendor: every run succeeds, the table and the monitors' samples are there."""
    env = {**os.environ, "VENDOR": "cpu", "PYTHON": sys.executable, "CASES": "mobilenetv2", "PRECISIONS": "fp32",
           "STEPS": "2", "WORKERS": "0"}
    proc = subprocess.run(["bash", str(REPO_ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out")], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 run(s) failed" in proc.stdout and "p_core" in proc.stdout and "busbw" in proc.stdout
    monitors = list((tmp_path / "out" / "results").glob("gpu-*-mobilenetv2-fp32/mobilenetv2/1x1/*/monitor.csv"))
    assert monitors and len(monitors[0].read_text().splitlines()) >= 2


def test_a_torch_that_does_not_import_is_one_clear_error_and_leaves_no_run_folder(tmp_path: Path) -> None:
    """The preflight reads torch's version from its metadata (no import: seconds saved per
    node); the Python environment probe imports it. A torch that is installed but does not
    import (a missing shared library) is the inventory's python, exit 2, nothing left."""
    broken = tmp_path / "broken"
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text(
        "raise ImportError('libtorch_cpu.so: cannot open shared object file: No such file or directory')\n")
    hosts = local_inventory(tmp_path, free_port(), setup=f"export PYTHONPATH={broken}")
    proc = bench(hosts, tmp_path / "results", "bare-broken-torch", "--config", "1x2", "--fix-hp", TINY)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{hosts}: cluster.payload.python: the Python on here cannot run the job" in proc.stderr, proc.stderr
    assert "libtorch_cpu.so: cannot open shared object file" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list((tmp_path / "work").glob("runs/bare-broken-torch/node*")), "a run folder is left"


def test_a_python_without_torch_is_refused_at_preflight(tmp_path: Path) -> None:
    """An interpreter that does not see torch at all (here: site-packages left out with -S)."""
    python = tmp_path / "python-without-site"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    hosts = local_inventory(tmp_path, free_port(), python=str(python))
    proc = bench(hosts, tmp_path / "results", "bare-no-torch", "--config", "1x2", "--fix-hp", TINY)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (f"{hosts}: cluster.payload.python: the Python on here cannot run the job: it has no torch "
            f"({python}: ModuleNotFoundError: No module named 'torch')") in proc.stderr, proc.stderr
    assert (tmp_path / "work" / "runs").is_dir() and not (tmp_path / "work" / "runs" / "bare-no-torch").exists()
