"""The training side of the stall watchdog, on real DDP runs (2 processes, gloo):
heartbeat events only while a rank waits for an epoch's first batch or
evaluates, silence while it is blocked in a collective, and every thread's
stack in stacks_rank<r>.log when a training process gets SIGUSR1.

The slow data comes from tests/cases/slowdata/sitecustomize.py, so the ranks
are plain `python -u -m cases.run` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
from casekit import REPO, Events, env, read_events, run_case_args

from cases.heartbeat import Heartbeat, heartbeat_interval
from cases.protocol import HEARTBEAT_ENV, is_training_command, stacks_file_name
from cases.protocol import HEARTBEAT_S as HEARTBEAT_DEFAULT_S
from cases.recorder import Recorder
from cases.stacks import training_pids

SLOWDATA = Path(__file__).resolve().parent / "slowdata"
# 64 samples / (4 per device x 2) = 8 steps, then an eval of 10 samples
SYNTHETIC = "synthetic_samples=64,synthetic_val_samples=10,log_every=4"
HEARTBEAT_S = 0.2


def torchrun_argv(log_dir: Path) -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *run_case_args("mobilenetv2", log_dir, SYNTHETIC)]


def slow_env(slow: Dict[str, object]) -> Dict[str, str]:
    variables = env()
    variables["PYTHONPATH"] = os.pathsep.join([str(SLOWDATA), variables["PYTHONPATH"]])
    variables["BENCH_TEST_SLOW"] = json.dumps(slow)
    variables[HEARTBEAT_ENV] = str(HEARTBEAT_S)
    return variables


def heartbeat_runs(events: Events) -> List[Tuple[str, str, str, List[float]]]:
    """Per run of consecutive heartbeats: (phase, the event before, the event after, waited_s values)."""
    runs: List[Tuple[str, str, str, List[float]]] = []
    keys = events.keys()
    index = 0
    while index < len(keys):
        if keys[index] != "heartbeat":
            index += 1
            continue
        start = index
        while index < len(keys) and keys[index] == "heartbeat":
            index += 1
        beats = [r["value"] for r in events.records[start:index]]
        phases = {b["phase"] for b in beats}
        assert len(phases) == 1, f"one wait, one phase: {beats}"
        runs.append((phases.pop(), keys[start - 1], keys[index] if index < len(keys) else "",
                     [b["waited_s"] for b in beats]))
    return runs


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def events_of(log_dir: Path, rank: int) -> Events:
    path = log_dir / f"events_rank{rank}.log"
    if not path.is_file():
        return Events([])
    # The last line may be half written: keep the complete ones.
    text = path.read_text(encoding="utf-8")
    complete = text[:text.rfind("\n") + 1]
    partial = path.with_suffix(".snapshot")
    partial.write_text(complete, encoding="utf-8")
    return read_events(partial)


def count(events: Events, key: str) -> int:
    return len(events.all(key))


def kill_tagged(tag: str) -> None:
    """SIGKILL every process whose environment holds this test's tag (torchrun's
    workers run in sessions of their own, so killing its group is not enough)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if tag.encode() in (entry / "environ").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


@pytest.mark.usefixtures("training_processes")
def test_heartbeats_while_waiting_for_the_first_batch_and_evaluating_only(tmp_path: Path) -> None:
    done = subprocess.run(torchrun_argv(tmp_path / "logs"), cwd=REPO, env=slow_env({"first_batch": 1.2, "eval": 1.2}),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        events = read_events(tmp_path / "logs" / f"events_rank{rank}.log")
        assert events.keys()[-1] == "run_stop" and events.one("run_stop")["value"] == {"status": "success"}
        runs = heartbeat_runs(events)
        assert [run[:3] for run in runs] == [("first_batch", "epoch_start", "step"),
                                             ("eval", "eval_start", "eval_stop")], runs
        for phase, _, _, waited in runs:
            assert waited[0] == 0, f"{phase}: the first heartbeat comes when the wait begins"
            assert len(waited) >= 3 and waited == sorted(waited) and waited[-1] >= 0.8, (phase, waited)


@pytest.mark.usefixtures("training_processes")
def test_a_rank_in_a_collective_is_silent_and_sigusr1_dumps_every_rank_stack(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    tag = f"watchdog-test-{uuid.uuid4().hex}"
    # Rank 1 waits "forever" for its first batch; rank 0 gets its batch and blocks in
    # the step's first fence (a barrier) until rank 1 comes.
    slow = {"first_batch": 300, "ranks": [1], "tag": tag}
    with (tmp_path / "torchrun.out").open("w") as out:
        agent = subprocess.Popen(torchrun_argv(logs), cwd=REPO, env=slow_env(slow), stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: count(events_of(logs, 1), "heartbeat") >= 3 and "epoch_start" in events_of(logs, 0).keys(),
                 120, "rank 1 heartbeating while it waits for its first batch")
        time.sleep(5 * HEARTBEAT_S)  # rank 0 reaches the barrier
        rank0_before, beats1_before = events_of(logs, 0).keys(), count(events_of(logs, 1), "heartbeat")
        time.sleep(8 * HEARTBEAT_S)
        rank0_after, beats1_after = events_of(logs, 0).keys(), count(events_of(logs, 1), "heartbeat")
        assert rank0_after == rank0_before, "rank 0, blocked in a collective, writes nothing"
        assert rank0_after[-1] == "heartbeat" and "step" not in rank0_after
        assert beats1_after >= beats1_before + 3, "rank 1 keeps heartbeating while it waits for data"

        pids = {rank: events_of(logs, rank).one("process_start")["value"]["pid"] for rank in (0, 1)}
        found = training_pids()
        assert set(pids.values()) <= set(found), (pids, found)
        assert agent.pid not in found, "torchrun's agent is not a training process"
        for pid in pids.values():
            os.kill(pid, signal.SIGUSR1)
        stacks = {rank: logs / stacks_file_name(rank) for rank in (0, 1)}
        wait_for(lambda: all(p.is_file() and "driver.py" in p.read_text() for p in stacks.values()), 30,
                 "stack dumps naming driver.py")
        rank0, rank1 = (stacks[rank].read_text() for rank in (0, 1))
        for text in (rank0, rank1):
            assert 'File "' in text and "most recent call first" in text
            assert "in train" in text and "cases/run.py" in text
        assert "in barrier" in rank0 and "in fence" in rank0, rank0
        assert "in _batches" in rank1 and "sitecustomize.py" in rank1, rank1
        assert "heartbeat.py" in rank1, "every thread is dumped, the heartbeat thread included"

        time.sleep(2 * HEARTBEAT_S)
        assert agent.poll() is None, "the dump does not end the run"
        assert "run_stop" not in events_of(logs, 0).keys() + events_of(logs, 1).keys()
        assert count(events_of(logs, 1), "heartbeat") > beats1_after
    finally:
        kill_tagged(tag)
        try:
            os.killpg(agent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        agent.wait(timeout=60)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "-u", "-m", "cases.run", "--case", "resnet50"], True),
        (["python", "-m", "cases.run", "--case", "vit"], True),
        (["/opt/conda/bin/python3.8", "-u", "-m", "cases.run"], True),
        (["python3", "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cases.run"], False),
        (["/usr/bin/python3", "-u", "-m", "cases.runner"], False),
        (["bash", "-c", "python -m cases.run"], False),
        (["python3", "-m", "cases.stacks"], False),
        ([], False),
    ],
)
def test_training_command_lines(argv: List[str], expected: bool) -> None:
    assert is_training_command(argv) is expected


def test_heartbeat_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    assert heartbeat_interval() == HEARTBEAT_DEFAULT_S == 30
    monkeypatch.setenv(HEARTBEAT_ENV, "0.5")
    assert heartbeat_interval() == 0.5
    for bad in ("nope", "0", "-1", "inf", "nan"):
        monkeypatch.setenv(HEARTBEAT_ENV, bad)
        assert heartbeat_interval() == HEARTBEAT_DEFAULT_S
        assert f"{HEARTBEAT_ENV}={bad!r} is not a positive number" in capsys.readouterr().err


def test_heartbeats_stop_when_the_wait_ends(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, rank=3, echo=False)
    with Heartbeat(recorder, interval_s=0.05).waiting("eval"):
        time.sleep(0.4)
    recorder.emit("eval_stop", {})
    time.sleep(0.2)
    recorder.close()
    events = read_events(tmp_path / "events_rank3.log")
    assert events.keys()[-1] == "eval_stop", "nothing after the wait"
    beats = [r["value"] for r in events.all("heartbeat")]
    assert beats[0] == {"phase": "eval", "waited_s": 0} and len(beats) >= 4
    assert all(r["rank"] == 3 for r in events.records)
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-")]
