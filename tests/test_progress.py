"""Live progress (harness/core/progress.py, progress_view.py): the per-node line, the time left,
heartbeats worded for a person, redrawn in place on a terminal, timestamped plain lines elsewhere."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from fake_backend import FakeBackend, FakeNode
from rich.console import Console

from harness.core import watch
from harness.core.events import Event
from harness.core.inventory import load_inventory
from harness.core.job import make_job
from harness.core.progress import NodeProgress, ProgressBoard, RankStep, activity, duration_text, eta_s, event_text, progress_line
from harness.core.progress_view import ProgressShown
from harness.core.runner import run_job
from harness.core.watch import WatchLimits

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def step(rank: int, number: int, step_s: float, samples: int = 8, total: int | None = 40, epoch: int = 1) -> Event:
    value = {"epoch": epoch, "step": number, "samples": samples, "step_s": step_s, "core_s": step_s / 2}
    if total is not None:
        value["steps_total"] = total
    return Event(1_700_000_000_000 + number, "step", rank, value)


def heartbeat(rank: int, phase: str, waited_s: float) -> Event:
    return Event(1_700_000_000_000, "heartbeat", rank, {"phase": phase, "waited_s": waited_s})


def test_durations_and_the_time_left() -> None:
    assert [duration_text(s) for s in (0, 9.6, 65, 3600 + 7 * 60 + 30)] == ["0s", "10s", "1m05s", "1h07m"]
    assert eta_s(10, 40, 0.5) == 15.0
    assert eta_s(45, 40, 0.5) == 0.0  # past the budget: nothing left, never negative
    assert eta_s(10, None, 0.5) is None and eta_s(10, 40, None) is None and eta_s(10, 40, 0.0) is None


def test_a_heartbeat_is_worded_for_a_person_never_a_dict() -> None:
    assert activity(heartbeat(0, "first_batch", 0)) == "waiting for the first batch"
    assert activity(heartbeat(0, "first_batch", 12.4)) == "waiting for the first batch (12s)"
    assert activity(heartbeat(0, "eval", 75)) == "evaluating (1m15s)"
    assert activity(Event(0, "eval_start", 0, {"epoch": 2})) == "evaluating epoch 2"
    assert activity(Event(0, "eval_stop", 0, {"epoch": 2, "acc": 12.3456})) == "evaluated epoch 2: acc 12.35%"
    assert activity(step(0, 3, 0.1)) is None  # the step line says it
    for key in ("heartbeat", "process_start", "world", "train_start", "epoch_start", "train_stop", "run_stop"):
        text = activity(Event(0, key, 0, {"phase": "first_batch", "epoch": 1, "status": "success"}))
        assert text is not None and "{" not in text and "'" not in text


def test_a_stalled_ranks_last_event_is_worded_too() -> None:
    assert event_text(step(0, 7, 0.1)) == "epoch 1 step 7"
    assert event_text(heartbeat(0, "first_batch", 30)) == "waiting for the first batch (30s)"
    assert event_text(Event(0, "config", 0, {"batch_size": 2})) == "starting"
    assert event_text(Event(0, "something_new", 0, {"x": 1})) == "something_new"


def test_the_progress_line_of_a_node() -> None:
    slowest = RankStep(rank=3, epoch=2, step=30, steps_total=40, step_s=0.5, samples_per_s=16.0)
    line = progress_line(NodeProgress(node_rank=1, host="beta", elapsed_s=65, epoch=2, step=30, steps_total=40,
                                      samples_per_s=48.25, ranks=2, slowest=slowest, left_s=5))
    assert line == ("node 1 (beta): epoch 2 step 30/40 · 48.2 samples/s (2 ranks) · slowest rank 3 16.0/s"
                    " · 1m05s elapsed · ~5s left")
    waiting = progress_line(NodeProgress(node_rank=0, host="alpha", elapsed_s=20,
                                         activity="waiting for the first batch (12s)"))
    assert waiting == "node 0 (alpha): waiting for the first batch (12s) · 20s elapsed"
    assert progress_line(NodeProgress(node_rank=0, host="alpha", elapsed_s=3)) == "node 0 (alpha): starting · 3s elapsed"
    one_rank = progress_line(NodeProgress(node_rank=0, host="alpha", elapsed_s=3, step=2, samples_per_s=10.0,
                                          ranks=1))
    assert one_rank == "node 0 (alpha): step 2 · 10.0 samples/s · 3s elapsed"


def test_the_board_sums_a_nodes_ranks_names_the_slowest_and_estimates_from_the_pace_seen() -> None:
    # 2 nodes x 2 ranks, a global batch of 8 (2 samples per rank and step)
    board = ProgressBoard({0: "alpha", 1: "beta"}, nproc_per_node=2, world_size=4, started=100.0)
    board.update({0: heartbeat(0, "first_batch", 4), 1: heartbeat(1, "first_batch", 4)}, now=104.0)
    assert board.lines(now=105.0)[0] == "node 0 (alpha): waiting for the first batch (4s) · 5s elapsed"
    assert board.lines(now=105.0)[1] == "node 1 (beta): starting · 5s elapsed"
    board.update({0: step(0, 1, 0.25), 1: step(1, 1, 0.5), 2: step(2, 1, 0.25), 3: step(3, 1, 0.25)}, now=110.0)
    board.update({0: step(0, 11, 0.25), 1: step(1, 11, 0.5), 2: step(2, 11, 0.25), 3: step(3, 11, 0.25)}, now=120.0)
    node0 = board.node(0, now=121.0)
    assert node0.step == 11 and node0.steps_total == 40
    assert node0.samples_per_s == pytest.approx(2 / 0.25 + 2 / 0.5)  # 8 + 4
    assert node0.slowest is not None and node0.slowest.rank == 1
    assert node0.left_s == pytest.approx(29 * 1.0)  # 10 steps in 10 s seen, 29 left
    line = board.lines(now=121.0)[0]
    assert line == ("node 0 (alpha): epoch 1 step 11/40 · 12.0 samples/s (2 ranks) · slowest rank 1 4.0/s"
                    " · 21s elapsed · ~29s left")
    # evaluating after the epoch: what it does now, with the last step it took
    board.update({0: heartbeat(0, "eval", 3)}, now=122.0)
    assert "epoch 1 step 11/40 · evaluating (3s) · " in board.lines(now=122.0)[0]
    # done: nothing left to estimate
    board.update({0: Event(0, "train_stop", 0, {}), 1: Event(0, "run_stop", 1, {"status": "success"})}, now=123.0)
    assert board.node(0, now=123.0).left_s is None
    assert board.lines(now=123.0)[0].startswith("node 0 (alpha): epoch 1 step 11/40 · training done · ")


def test_with_one_step_seen_the_time_left_comes_from_that_steps_time() -> None:
    board = ProgressBoard({0: "alpha"}, nproc_per_node=1, world_size=1, started=0.0)
    board.update({0: step(0, 4, 2.0, total=10)}, now=1.0)
    assert board.node(0, now=1.0).left_s == 12.0
    board.update({0: step(0, 5, 2.0, total=None)}, now=2.0)
    assert board.node(0, now=2.0).left_s is None  # no budget announced: no estimate


def test_a_log_gets_timestamped_plain_lines_at_first_at_the_first_step_and_then_at_an_interval() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80)  # not a terminal
    board = ProgressBoard({0: "alpha", 1: "beta"}, nproc_per_node=1, world_size=2, started=0.0)
    with ProgressShown(console, board) as shown:
        shown.show(1.0)  # nothing read yet: nothing written
        board.update({0: heartbeat(0, "first_batch", 0)}, now=2.0)
        shown.show(2.0)
        shown.show(3.0)  # nothing new, and the interval has not passed
        board.update({0: step(0, 1, 0.1), 1: step(1, 1, 0.1)}, now=4.0)
        shown.show(4.0)  # the nodes' first steps
        shown.show(20.0)
        shown.show(35.0)  # the interval
    lines = out.getvalue().splitlines()
    assert len(lines) == 6, lines
    assert all(re.match(STAMP + " training: node [01] ", line) for line in lines)
    assert lines[0].endswith("training: node 0 (alpha): waiting for the first batch · 2s elapsed")
    assert "node 0 (alpha): epoch 1 step 1/40 · " in lines[2] and "node 1 (beta): epoch 1 step 1/40" in lines[3]
    assert lines[4].endswith("node 0 (alpha): epoch 1 step 1/40 · 40.0 samples/s · 35s elapsed · ~4s left")
    assert not CONTROL.search(out.getvalue())  # no colours, no cursor movement, no \r


def test_a_terminal_gets_one_line_per_node_redrawn_in_place() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    board = ProgressBoard({0: "alpha", 1: "beta"}, nproc_per_node=1, world_size=2, started=0.0)
    with ProgressShown(console, board) as shown:
        board.update({0: step(0, 1, 0.1), 1: step(1, 1, 0.1)}, now=1.0)
        assert shown._live is not None
        shown._live.refresh()
        board.update({0: step(0, 2, 0.1), 1: step(1, 2, 0.1)}, now=2.0)
        shown._live.refresh()
    text = out.getvalue()
    assert "node 0 (alpha): epoch 1 step 1/40" in text and "node 0 (alpha): epoch 1 step 2/40" in text
    assert "node 1 (beta): epoch 1 step 2/40" in text
    # the second picture replaces the first: the cursor goes back up over the two lines
    assert re.search(r"\x1b\[1A|\x1b\[2K", text)
    assert "training: " not in text  # no log lines on a terminal


def test_the_watcher_prints_worded_progress_in_a_log_never_a_raw_event(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "POLL_S", 0.01)
    monkeypatch.setattr("harness.core.backend.PROGRESS_READ_S", 0.02)
    hosts = [{"name": name, "address": address, "user": "root", "devices": 1, "work_dir": "/scratch"}
             for name, address in (("alpha", "10.0.0.1"), ("beta", "10.0.0.2"))]
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"known_hosts": str(tmp_path / "kh")}, "hosts": hosts}))
    first_batch = (1000, "heartbeat", {"phase": "first_batch", "waited_s": 0})
    nodes = [FakeNode(["running"] * 20 + ["exit:0"], {0: [first_batch]}),
             FakeNode(["running"] * 20 + ["exit:0"], {1: [first_batch]})]
    out = io.StringIO()
    job = make_job("resnet50", "cpu", "cpu", "2x1", run_id="progress", timeout_s=30)
    run_job(job, load_inventory(path), FakeBackend(nodes), tmp_path / "results", Console(file=out, width=200),
            limits=WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=30))
    text = out.getvalue()
    assert re.search(STAMP + r" training: node 0 \(alpha\): waiting for the first batch · \d+s elapsed", text), text
    assert re.search(STAMP + r" training: node 1 \(beta\): waiting for the first batch", text), text
    assert "{'phase'" not in text and "heartbeat" not in text
