"""What a person sees of a real 2x1 run: live progress redrawn in place on a terminal (a
pseudo-terminal, through the local access and the bare payload: two "hosts" on this machine, no
sshd, no Docker), timestamped plain lines through a pipe (on the test hosts: sshd + Docker), and a
failing rank's own exception in its node's lines. One run per behaviour: each costs half a minute
of the suite's two cores."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from hostkit import RANK_ENV

from harness import REPO_ROOT

TINY = "bs=2,image_size=32,num_classes=10"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
# Anything but \t and \n: colours, cursor movements, \r.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
STEP_LINE = r"node 0 \(\S+\): epoch 1 step (\d+)/\d+ · [\d,.]+ samples/s · \S+ elapsed"
FIX_HP = f"{TINY},max_steps=20"


def bench_argv(hosts: Path, results: Path, run_id: str, fix_hp: str) -> list[str]:
    return [sys.executable, "-m", "harness", "bench", "--case", "resnet50", "--vendor", "cpu", "--config", "2x1",
            "--hosts", str(hosts), "--results", str(results), "--run-id", run_id, "--fix-hp", fix_hp]


def run_on_a_terminal(argv: list[str], limit_s: float = 600, columns: int = 200) -> tuple[int, str]:
    """The controller with its stdout and stderr on a pseudo-terminal of `columns`; (exit status, what it showed)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], 0.5)
            if readable:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not data:
                    break
                shown += data
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        os.close(master)
    return proc.returncode, shown.decode("utf-8", "replace")


def local_two_hosts(tmp_path: Path) -> Path:
    """Two nodes on this machine through the local access, each running torchrun from this venv."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    path = tmp_path / "local-2.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": {"backend": "local", "payload": {"type": "bare", "python": sys.executable}, "mounts": [],
                    "env": {"GLOO_SOCKET_IFNAME": "lo", **RANK_ENV}, "master_port": port},
        "hosts": [{"name": name, "address": "127.0.0.1", "transport": "local", "devices": 1,
                   "work_dir": str(tmp_path / f"work-{name}")} for name in ("alpha", "beta")]}))
    return path


def check_terminal(status: int, shown: str) -> None:
    assert status == 0, shown[-5000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    steps = {int(step) for step in re.findall(STEP_LINE, plain)}
    assert len(steps) >= 2, plain[-5000:]  # the line showed more than one step: it was redrawn
    assert re.search(r"node 1 \(\S+\): epoch 1 step \d+/\d+", plain)
    # redrawn in place: rich goes back to the line start, erases, and moves up over the other node's line
    assert "\r\x1b[2K" in shown and "\x1b[1A" in shown
    assert not re.search(STAMP + " training: ", plain)  # no log lines on a terminal
    assert "{'phase'" not in plain


def check_pipe(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    progress = [line for line in proc.stderr.splitlines() if " training: " in line]
    assert progress and all(re.fullmatch(STAMP + r" training: node [01] \(\S+\): .+ · \S+ elapsed( · ~\S+ left)?",
                                         line) for line in progress), proc.stderr
    # the nodes' lines come when they take their first step
    assert any(re.search(STEP_LINE, line) for line in progress), proc.stderr
    assert not CONTROL.search(proc.stderr) and not CONTROL.search(proc.stdout)
    assert "{'phase'" not in proc.stderr and "heartbeat" not in proc.stderr


def piped(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_through_a_pipe_progress_is_timestamped_plain_lines(make_hosts_yaml: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    check_pipe(piped(bench_argv(make_hosts_yaml(), tmp_path, "progress-pipe", FIX_HP)))


def test_local_bare_terminal_progress_is_redrawn_in_place(tmp_path: Path, training_processes: None) -> None:
    check_terminal(*run_on_a_terminal(bench_argv(local_two_hosts(tmp_path), tmp_path / "results",
                                                 "progress-local-tty", FIX_HP)))


def test_a_failing_ranks_own_exception_leads_its_nodes_lines(make_hosts_yaml: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    run_id = "progress-crash"
    proc = piped(bench_argv(make_hosts_yaml(), tmp_path, run_id, f"{TINY},fail_rank=1,fail_step=2"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads((tmp_path / run_id / "resnet50" / "2x1" / "results.json").read_text())
    report = result["failure"].splitlines()
    assert report[0] == "first failure: rank 1: RuntimeError: injected failure at step 2 on rank 1"
    header = next(i for i, line in enumerate(report) if line.startswith("--- node 1 ("))
    assert report[header + 1].startswith("rank 1's own error (container/torchrun/")
    assert report[header + 2].lstrip().startswith('File "') and "cases/driver.py" in "\n".join(report[header:])
    node1 = next(node for node in result["nodes"] if node["node_rank"] == 1)
    assert node1["last_lines"][-1] == "RuntimeError: injected failure at step 2 on rank 1"
    assert not any(line.strip().startswith("^") or "ChildFailedError" in line or "Root Cause" in line
                   for line in report)
    assert "rank 1's own error" in proc.stdout  # the terminal's report (bench prints it whole)
