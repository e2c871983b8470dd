"""Campaigns end to end on the two SSH test hosts (real sshd, dockerd, torchrun):
a failing rank not retried, a host away on the first attempt and back for the
second, a webhook on 127.0.0.1, the summary in headless Chromium; a killed
controller resumed; a second campaign and a `bench` refused by the lock; stale
locks taken over; a bad job refused before the first starts.

Every test removes the containers of its campaign (their run ids start with
the campaign's name) in a finally.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from harness import REPO_ROOT
from harness.hostlock import HOLDER_FILE, LOCK_DIR_NAME
from harness.report.history import HISTORY_FILE
from harness.report.history import runs as history_runs

pytest_plugins = ["spare_sshd"]
if TYPE_CHECKING:
    from conftest import TestInfra
    from spare_sshd import SpareSshd

TINY = "bs=2,image_size=32,num_classes=10,max_steps=2"
RUN_S = 600


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def containers(prefix: str, running: bool = False) -> list[str]:
    """Containers of the harness whose run id starts with prefix."""
    listed = docker("ps", "-a" if not running else "--filter=status=running", "--filter", "label=bench.run_id",
                    "--format", '{{.ID}} {{.Label "bench.run_id"}}').stdout.split("\n")
    return [line.split()[0] for line in listed if len(line.split()) == 2 and line.split()[1].startswith(prefix)]


@pytest.fixture
def campaign_name(docker_engine: None) -> Iterator[str]:
    """A fresh campaign name; its containers are looked up and removed with `docker` (marks the test `hosts`)."""
    name = f"camp{uuid.uuid4().hex[:6]}"
    try:
        yield name
    finally:
        for cid in containers(name):
            docker("rm", "--force", cid)


def write_suite(folder: Path, name: str, hosts: Path, jobs: list[dict], **top: Any) -> Path:
    data = {"name": name, "hosts": str(hosts),
            "defaults": {"vendor": "cpu", "retries": 2, "timeout": "10m", "stall_timeout": "3m"},
            "backoff": 1, **top, "jobs": jobs}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def campaign_argv(suite: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", "campaign", "run", str(suite), "--results", str(results), *extra]


def run_campaign(suite: Path, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(campaign_argv(suite, results, *extra), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=RUN_S, check=False)


def state_of(results: Path, name: str) -> dict:
    files = sorted((results / "campaigns" / name).glob("*/state.json"))
    assert files, f"no state of {name} in {results}"
    return json.loads(files[-1].read_text())


def wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 300,
             proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the campaign ended ({proc.returncode}) before {what}:\n" + "".join(proc.communicate()))
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def work_dirs(hosts: Path) -> list[Path]:
    return [Path(h["work_dir"]) for h in yaml.safe_load(hosts.read_text())["hosts"]]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def open_in_chromium(page: Path) -> tuple[str, list[str]]:
    """(the DOM after load, console messages) of the page in headless Chromium."""
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def plant_lock(work_dir: Path, **holder: Any) -> None:
    lock = work_dir / LOCK_DIR_NAME
    lock.mkdir(parents=True)
    (lock / HOLDER_FILE).write_text(json.dumps({"campaign": "old-night", "since": "2026-11-01T18:00:00+00:00",
                                                "token": "0123456789abcdef", **holder}))


def test_three_jobs_failing_rank_host_back_webhook_and_summary(
        make_hosts_yaml: Callable[..., Path], spare_sshd: Callable[..., Any], infra: TestInfra, tmp_path: Path,
        campaign_name: str, webhook: tuple[str, list[dict]]) -> None:
    url, received = webhook
    spare: SpareSshd = spare_sshd(start=False)  # away at the start
    known = spare.known_hosts_file(tmp_path / "known_hosts", include=infra.known_hosts)
    hosts = make_hosts_yaml(extra_hosts=[spare.inventory_entry("spare")],
                            cluster_overrides={"known_hosts": str(known), "host_lost_s": 10,
                                               "connect_window_s": 3})  # the spare is away: given up on sooner
    # A lock another controller left two days ago: stale, taken over with a warning.
    plant_lock(work_dirs(hosts)[0], controller="another-controller", pid=1, heartbeat=time.time() - 2 * 86400)
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "config": "2x1", "fix_hp": TINY},
        {"case": "resnet50", "config": "2x1", "fix_hp": f"{TINY},fail_rank=1,fail_step=1"},
        {"case": "resnet50", "config": "1x1", "fix_hp": TINY, "hosts": ["spare"]},
    ], backoff=5, lock_stale_after="1d", notify={"webhook": url})
    results = tmp_path / "results"
    proc = subprocess.Popen(campaign_argv(suite, results), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def third_failed_once() -> bool:
            files = list((results / "campaigns" / campaign_name).glob("*/state.json"))
            if not files:
                return False
            attempts = json.loads(files[0].read_text())["units"][2]["attempts"]
            return bool(attempts) and attempts[0]["status"] == "failed"

        wait_for(third_failed_once, "the first attempt of job 3 to fail", proc=proc)
        spare.start()
        stdout, stderr = proc.communicate(timeout=RUN_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 1, stdout + stderr
    assert "Traceback" not in stderr
    assert "taking over a stale lock (no sign of life from its controller for 48.0 h)" in stderr
    assert "another-controller" in stderr

    state = state_of(results, campaign_name)
    assert state["status"] == "finished" and state["exit_status"] == 1
    first, failing, away = state["units"]
    assert first["status"] == "success" and len(first["attempts"]) == 1
    assert failing["status"] == "failed" and len(failing["attempts"]) == 1  # kind job: never retried
    assert failing["attempts"][0]["failure_kind"] == "job"
    assert away["status"] == "success" and [a["status"] for a in away["attempts"]] == ["failed", "success"]
    assert away["attempts"][0]["failure_kind"] == "infra" and "spare" in away["attempts"][0]["failure"]
    run_ids = [a["run_id"] for u in state["units"] for a in u["attempts"]]
    assert len(set(run_ids)) == 4
    assert sorted(r.run_id for r in history_runs(results / HISTORY_FILE)) == sorted(run_ids)
    for run_id in run_ids:
        assert list((results / run_id).rglob("results.json")), run_id

    events = [message["event"] for message in received]
    assert events == ["job_failed", "campaign_finished"], received
    assert received[0]["job"]["job"] == 2 and received[0]["job"]["failure_kind"] == "job"
    assert received[1]["counts"] == {"success": 2, "failed": 1, "running": 0, "interrupted": 0, "waiting": 0}
    assert received[1]["quarantined"] == []  # the spare was away once: counted, not quarantined
    assert received[1]["exit_status"] == 1 and received[1]["summary"].endswith("summary.md")

    folder = Path(received[1]["folder"])
    summary = (folder / "summary.md").read_text()
    assert "| 1: resnet50 cpu 2x1" in summary and "| 3: resnet50 cpu 1x1" in summary
    assert "job: first failure: rank 1: RuntimeError: injected failure at step 1 on rank 1" in summary
    dom, console = open_in_chromium(folder / "summary.html")
    assert console == []
    drawn = re.search(r'data-plots-drawn="(\d+)" data-plots-total="(\d+)"', dom)
    assert drawn is not None and drawn.group(1) == drawn.group(2) and int(drawn.group(2)) >= 4, dom[:500]

    status = subprocess.run([sys.executable, "-m", "harness", "campaign", "status", str(folder)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "2 ok, 1 failed" in status.stdout, status.stdout + status.stderr
    assert containers(campaign_name) == []
    assert not any((d / LOCK_DIR_NAME).exists() for d in work_dirs(hosts))


def test_killed_controller_resumes_and_the_lock_refuses_others(
        make_hosts_yaml: Callable[..., Path], tmp_path: Path, campaign_name: str) -> None:
    hosts = make_hosts_yaml()
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "config": "1x1", "fix_hp": TINY},
        {"case": "resnet50", "config": "2x1", "fix_hp": "bs=2,image_size=32,num_classes=10,max_steps=80"},
        {"case": "resnet50", "config": "1x1", "fix_hp": TINY},
    ])
    results = tmp_path / "results"
    proc = subprocess.Popen(campaign_argv(suite, results), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        second_run = f"{campaign_name}-"

        def job_2_running() -> bool:
            files = list((results / "campaigns" / campaign_name).glob("*/state.json"))
            if not files:
                return False
            attempts = json.loads(files[0].read_text())["units"][1]["attempts"]
            return bool(attempts) and len([c for c in containers(attempts[0]["run_id"], running=True)]) == 2

        wait_for(job_2_running, "job 2's two containers", proc=proc)
        before = state_of(results, campaign_name)
        job1_run = before["units"][0]["attempts"][0]["run_id"]
        job2_run = before["units"][1]["attempts"][0]["run_id"]

        other = write_suite(tmp_path, f"{campaign_name}x", hosts, [{"case": "resnet50", "config": "1x1", "fix_hp": TINY}])
        refused = run_campaign(other, tmp_path / "other-results")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"locked by campaign {campaign_name}" in refused.stderr
        assert f"controller {socket.gethostname()}, pid {proc.pid}" in refused.stderr
        assert not (tmp_path / "other-results" / "campaigns" / f"{campaign_name}x").exists() or not list(
            (tmp_path / "other-results" / "campaigns" / f"{campaign_name}x").iterdir())
        for extra in ([], ["--clean-orphans"]):  # the lock is read beside the preflight, or before it removes anything
            bench = subprocess.run([sys.executable, "-m", "harness", "bench", "--case", "resnet50", "--vendor", "cpu",
                                    "--config", "1x1", "--fix-hp", TINY, "--hosts", str(hosts), "--results",
                                    str(tmp_path / "bench-results"), "--run-id", f"{campaign_name}-bench{len(extra)}",
                                    *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
            assert bench.returncode == 2 and f"locked by campaign {campaign_name}" in bench.stderr, bench.stderr
            assert len(containers(job2_run, running=True)) == 2

        # Killed once both of job 2's ranks have written events, so there are logs to collect on resume.
        def job_2_logged() -> bool:  # 2x1: node k on host k runs rank k
            logs = [d / "runs" / job2_run / f"node{k}" / "logs" / f"events_rank{k}.log" for k, d in enumerate(work_dirs(hosts))]
            return all(log.is_file() and log.stat().st_size > 0 for log in logs)

        wait_for(job_2_logged, "job 2's event logs on both hosts", proc=proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert len(containers(job2_run)) == 2  # left behind by the killed controller
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)

    resumed = run_campaign(suite, results, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "taking over a stale lock (its controller (pid" in resumed.stderr and "is gone" in resumed.stderr
    state = state_of(results, campaign_name)
    assert state["status"] == "finished" and state["exit_status"] == 0 and len(state["resumed"]) == 1
    first, second, third = state["units"]
    assert [a["run_id"] for a in first["attempts"]] == [job1_run]  # not run again
    assert [a["status"] for a in second["attempts"]] == ["abandoned", "success"]
    assert second["attempts"][0]["run_id"] == job2_run and second_run in second["attempts"][1]["run_id"]
    assert "found by label and removed" in second["attempts"][0]["failure"]
    collected = results / job2_run / "collected"
    assert sorted(p.name for p in collected.glob("*/container/events_rank*.log")) == ["events_rank0.log",
                                                                                     "events_rank1.log"]
    assert third["status"] == "success"
    assert containers(job2_run) == [] and containers(campaign_name) == []
    summary = next((results / "campaigns" / campaign_name).glob("*/summary.md")).read_text()
    assert summary.count("| success |") == 3
    assert not any((d / LOCK_DIR_NAME).exists() for d in work_dirs(hosts))


def test_a_bad_job_3_is_refused_before_job_1_starts(make_hosts_yaml: Callable[..., Path], tmp_path: Path,
                                                    campaign_name: str) -> None:
    hosts = make_hosts_yaml()
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "config": "2x1", "fix_hp": TINY},
        {"case": "resnet50", "config": "1x1", "fix_hp": TINY},
        {"case": "resnet50", "config": "2x1", "fix_hp": "bz=256,image_size=32"},
    ])
    proc = run_campaign(suite, tmp_path / "results")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{suite}: jobs[2] job 3 (resnet50 cpu 2x1 bz=256,image_size=32).fix_hp: unknown key 'bz'" in proc.stderr
    assert "did you mean 'bs'?" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists() and containers(campaign_name) == []
    assert not any((d / LOCK_DIR_NAME).exists() for d in work_dirs(hosts))


def test_sigterm_stops_records_and_resume_continues(make_hosts_yaml: Callable[..., Path], tmp_path: Path,
                                                    campaign_name: str) -> None:
    hosts = make_hosts_yaml()
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "config": "2x1", "fix_hp": "bs=2,image_size=32,num_classes=10,max_steps=40"},
    ])
    results = tmp_path / "results"
    proc = subprocess.Popen(campaign_argv(suite, results), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(containers(campaign_name, running=True)) == 2, "the job's containers", proc=proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 130, stdout + stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    # a log: every line is timestamped, the run's own output (phases, progress, failure) included
    unstamped = [line for line in stderr.splitlines() if line.strip()
                 and not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line)]
    assert unstamped == [], stderr
    assert re.search(r"\d\d:\d\d:\d\d preflight ", stderr) and re.search(r"\d\d:\d\d:\d\d campaign: ", stderr)
    state = state_of(results, campaign_name)
    assert state["status"] == "interrupted" and state["exit_status"] == 130
    assert state["units"][0]["status"] == "interrupted"  # not `running` under a controller that is gone
    attempt = state["units"][0]["attempts"][0]
    assert attempt["status"] == "interrupted" and attempt["failure_kind"] == "interrupted"
    assert Path(attempt["results_json"]).is_file()  # stopped, collected and recorded
    assert containers(campaign_name) == []
    assert not any((d / LOCK_DIR_NAME).exists() for d in work_dirs(hosts))

    resumed = run_campaign(suite, results, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "stale lock" not in resumed.stderr  # the stopped controller released it
    state = state_of(results, campaign_name)
    assert [a["status"] for a in state["units"][0]["attempts"]] == ["interrupted", "success"]
    again = run_campaign(suite, results, "--resume")
    assert again.returncode == 0 and "nothing to resume" in again.stdout + again.stderr


FAKE_NVIDIA_SMI = """#!/bin/sh
# A stand-in for nvidia-smi on a one-device host: recorded output for the process
# query, one device for the count, zero ECC counters.
case "$*" in
  *--query-compute-apps=*) cat "{processes}" ;;
  *--query-gpu=name,memory.total,driver_version*) echo "NVIDIA A100-SXM4-40GB, 40960 MiB, 470.57.02" ;;
  *--query-gpu=index,ecc.errors*) echo "0, 0, 0, 0, 0" ;;
  *) echo "fake nvidia-smi: not scripted: $*" >&2; exit 2 ;;
esac
"""


def test_a_foreign_process_on_the_devices_fails_the_gate_as_infra(tmp_path: Path, campaign_name: str) -> None:
    """The real controller, with an nvidia job on a local host whose `nvidia-smi`
    (a script first on PATH) lists processes from a recorded output: every attempt
    is refused by the gate, recorded `infra` naming host, pid, name and memory,
    retried, and nothing is started."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    processes = REPO_ROOT / "tests" / "fixtures" / "smi" / "nvidia-smi_compute_apps_header_units_l40s.txt"
    fake.write_text(FAKE_NVIDIA_SMI.format(processes=processes))
    fake.chmod(0o755)
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"cluster": {"master_port": 29577}, "hosts": [
        {"name": "gpuhost", "address": "127.0.0.1", "transport": "local", "devices": 1,
         "work_dir": str(tmp_path / "work")}]}))
    suite = write_suite(tmp_path, campaign_name, hosts, [
        {"case": "resnet50", "vendor": "nvidia", "config": "1x1", "fix_hp": TINY, "retries": 1}],
        gates={"leftovers": False})
    results = tmp_path / "results"
    proc = subprocess.run(campaign_argv(suite, results), cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_S,
                          env={**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d campaign: job 1: resnet50 nvidia A100 1x1 .*: failed \(infra, "
                     r"1 retry used\): health gate failed: gpuhost: foreign process on the devices: pid 44378 ",
                     output, re.MULTILINE), output
    state = state_of(results, campaign_name)
    (job,) = state["units"]
    assert job["status"] == "failed" and [a["failure_kind"] for a in job["attempts"]] == ["infra", "infra"]
    for attempt in job["attempts"]:
        assert attempt["failure"] == (
            "health gate failed: gpuhost: foreign process on the devices: pid 44378 (tritonserver, 1836 MiB); "
            "gpuhost: foreign process on the devices: pid 44966 "
            "(/opt/tritonserver/backends/python/triton_python_backend_stub, 974 MiB); "
            "gpuhost: foreign process on the devices: pid 52114 (/usr/bin/python3, 6294 MiB)")
        recorded = json.loads(Path(attempt["results_json"]).read_text())
        assert recorded["failure_kind"] == "infra" and recorded["nodes"] == []  # nothing was started
    assert state["health"]["gpuhost"]["errors"] == {"0": {"uncorrected_volatile": 0, "uncorrected_aggregate": 0,
                                                          "corrected_volatile": 0, "corrected_aggregate": 0}}
    assert containers(campaign_name) == []
    assert not (tmp_path / "work" / LOCK_DIR_NAME).exists()


def test_the_bandwidth_gate_measures_the_jobs_nodes_and_refuses_a_slow_fabric(
        make_hosts_yaml: Callable[..., Path], tmp_path: Path, campaign_name: str) -> None:
    """gates.min_busbw_gbps: cases/allreduce runs on the job's two hosts first and
    is recorded under <run>-busbw. Above the bar the job runs; below it the job is
    not started and its attempt is infra, naming the measured figure."""
    hosts = make_hosts_yaml()
    sweep = "max_bytes=65536,step_factor=16,warmup_iters=1,iters=2"
    results = tmp_path / "results"
    for bar, expected in ((1e-6, "success"), (1e6, "failed")):
        name = f"{campaign_name}{'ok' if expected == 'success' else 'slow'}"
        suite = write_suite(tmp_path, name, hosts, [{"case": "resnet50", "config": "2x1", "fix_hp": TINY, "retries": 0}],
                            gates={"min_busbw_gbps": bar, "busbw_fix_hp": sweep})
        done = run_campaign(suite, results)
        assert done.returncode == (0 if expected == "success" else 1), done.stdout + done.stderr
        (unit,) = state_of(results, name)["units"]
        (attempt,) = unit["attempts"]
        assert unit["status"] == expected
        gate_run = json.loads((results / f"{attempt['run_id']}-busbw" / "allreduce" / "2x1" / "results.json").read_text())
        peak = gate_run["bandwidth"]["peak_busbw_gbps"]
        assert gate_run["status"] == "success" and 0 < peak < 1e6
        if expected == "failed":
            assert attempt["failure_kind"] == "infra"
            assert re.fullmatch(r"health gate failed: all-reduce bus bandwidth [0-9.e+-]+ GB/s on node1, node2 is below "
                                r"gates\.min_busbw_gbps 1e\+06 \(run .*-busbw\)", attempt["failure"]), attempt["failure"]
            assert not (results / attempt["run_id"] / "resnet50" / "2x1" / "n1_noderank0").exists()
    assert containers(campaign_name) == []
