"""The controller listens: one long-lived stream per host (harness/backends/node_stream.py,
stream_watch.py, and the Docker payload's state functions). A stream that ends or drops is reopened; a real container's exit is
heard without polling; closing the watch leaves no process on the host; a stream
killed in the middle of a real two-host run is reopened and the run succeeds."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_faults import LONG, bench_argv, controller, results_of, wait_for_step, wait_running, work_dir

from harness.backends.docker import WATCH_SCRIPT, parse_docker_state
from harness.backends.node_stream import NodeStream
from harness.backends.stream_watch import HEARTBEAT_S, StreamWatch, watch_argv
from harness.backends.transport import LocalTransport
from harness.core.inventory import load_inventory
from harness.core.plan import NodePlan

if TYPE_CHECKING:
    from conftest import TestInfra


def until(condition: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {limit_s:.0f} s: {what}")


# -- parsing one answer -------------------------------------------------------------------
def test_state_lines_map_onto_node_states() -> None:
    assert parse_docker_state(0, "state=running exit=0 ").status == "running"
    assert parse_docker_state(0, "state=paused exit=0").status == "running"
    exited = parse_docker_state(1, "bash: banner\nstate=exited exit=137 ")
    assert (exited.node_rank, exited.status, exited.exit_code) == (1, "exited", 137)
    assert parse_docker_state(0, "Error: No such object: bench-x").status == "gone"
    silent = parse_docker_state(0, "")  # docker inspect killed by its timeout: the engine said nothing
    assert silent.status == "unreachable" and "no answer" in silent.detail


# -- one stream, a plain local command ------------------------------------------------------
def test_a_stream_hands_over_lines_and_is_reopened_when_its_command_ends() -> None:
    lines: list[str] = []
    notes: list[str] = []
    stream = NodeStream("here", LocalTransport(), ["sh", "-c", "echo one; printf 'two\\nthr'; sleep 0.1; echo ee"],
                        on_line=lines.append, on_change=notes.append, reopen_s=0.05).start()
    try:
        until(lambda: stream.status().reopened >= 2, 20, "the ended command opened again")
    finally:
        stream.close()
    assert lines[:3] == ["one", "two", "three"]  # a line split across reads is joined
    assert "ended (exit 0)" in stream.status().why_down and "reopening" in notes[0]


def test_closing_a_stream_ends_the_command_and_what_it_started(tmp_path: Path) -> None:
    marker = f"bench-stream-test-{uuid.uuid4().hex[:8]}"
    # A sleep of its own length: other tests running beside this one may have a `sleep 300`.
    child = f"sleep 300.{uuid.uuid4().int % 10**9:09d}"
    script = f"{child} & while :; do echo tick; sleep 0.1; done"
    stream = NodeStream("here", LocalTransport(), ["sh", "-c", script, marker], on_line=lambda _: None,
                        on_change=lambda _: None).start()
    until(lambda: stream.status().last_heard > 0 and _pids(marker) != [], 20, "the command runs")
    stream.close()
    until(lambda: _pids(marker) == [] and _pids(child) == [], 20, "nothing of the command is left")
    assert stream.status().reopened == 0


def _pids(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout.split()


# -- a real container -----------------------------------------------------------------------
@pytest.fixture
def container(infra: TestInfra, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A container that writes two rank-1 events, then exits 3 once `go` exists in its folder."""
    name = f"bench-watch-test-{uuid.uuid4().hex[:8]}"
    logs = tmp_path / "logs"
    logs.mkdir()
    event = ':::BENCH {"time_ms": %d, "key": "step", "rank": 1, "value": {"step": %d}}'
    script = (f"echo '{event % (1000, 1)}' >> /logs/events_rank1.log; echo '{event % (2000, 2)}' >> /logs/events_rank1.log;"
              " while [ ! -e /logs/go ]; do sleep 0.1; done; exit 3")
    subprocess.run(["docker", "run", "-d", "--name", name, "-v", f"{logs}:/logs", infra.base_image, "sh", "-c", script],
                   check=True, capture_output=True, timeout=120)
    try:
        yield name, logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


def _node(container: str, logs: Path, make_hosts_yaml: Callable[..., Path]) -> NodePlan:
    """Node 0 of a 1x2 run (ranks 0 and 1): `container`, its logs in `logs`, on this machine."""
    inventory = load_inventory(make_hosts_yaml(hosts=["node1"]))
    return NodePlan(host=inventory.hosts[0], node_rank=0, container_name=container, labels={},
                    host_run_dir=str(logs.parent), train_argv=[])


def docker_watch(run_id: str, node: NodePlan, heartbeat_s: float = HEARTBEAT_S) -> StreamWatch:
    """The Docker payload's watch of one node of a 1x2 run, through this machine's shell."""
    argv = watch_argv(WATCH_SCRIPT, run_id, node, 2, [node.container_name, "docker"], heartbeat_s)
    return StreamWatch(2, [(node, LocalTransport(), argv)], parse_docker_state)


def test_a_container_exit_is_heard_and_every_rank_event_read(container: tuple[str, Path],
                                                            make_hosts_yaml: Callable[..., Path]) -> None:
    name, logs = container
    run_id = f"watch-{uuid.uuid4().hex[:6]}"
    with docker_watch(run_id, _node(name, logs, make_hosts_yaml)) as watch:
        until(lambda: watch.states()[0].status == "running", 60, "the container seen running")
        until(lambda: 1 in watch.events([0]), 60, "rank 1's event read")
        assert watch.events([0])[1].value["step"] == 2  # the latest line of the file
        (logs / "go").touch()
        asked = time.monotonic()

        def exited() -> bool:
            watch.wait(1.0)  # returns early when a state changed
            return watch.states()[0].status == "exited"

        until(exited, 60, "the exit heard")
        state = watch.states()[0]
        assert (state.status, state.exit_code) == ("exited", 3)
        # Heard through `docker wait`, well before the next heartbeat could have told it.
        assert time.monotonic() - asked < 60
    until(lambda: _pids(f"bench-watch-{run_id}") == [], 30, "the host's watcher ended with the watch")


def test_a_killed_stream_is_reopened_and_heard_again(container: tuple[str, Path],
                                                     make_hosts_yaml: Callable[..., Path]) -> None:
    name, logs = container
    run_id = f"watch-{uuid.uuid4().hex[:6]}"
    with docker_watch(run_id, _node(name, logs, make_hosts_yaml), heartbeat_s=0.5) as watch:
        until(lambda: 1 in watch.events([0]), 60, "the stream heard")
        assert _pids(f"bench-watch-{run_id}"), "no watcher runs"
        subprocess.run(["pkill", "-f", f"bench-watch-{run_id}"], check=False)
        until(lambda: watch.reopened()[0] >= 1, 30, "the stream opened again")
        assert any("reopening" in note for note in watch.notes())
        until(lambda: watch.states()[0].status == "running", 30, "the state heard again")
        assert 1 in watch.events([0])


# -- a real run: the stream dropped mid-run ---------------------------------------------------
def test_a_watch_stream_dropped_mid_run_is_reopened_and_the_run_succeeds(make_hosts_yaml: Callable[..., Path],
                                                                         tmp_path: Path) -> None:
    run_id = "fault-stream-drop"
    hosts = make_hosts_yaml()
    steps = 12  # of resnet50: long enough for the stream to be dropped while it trains
    with controller(bench_argv(hosts, tmp_path, run_id, "--config", "2x1",
                               "--fix-hp", f"{LONG},max_steps={steps}", case="resnet50")) as proc:
        wait_running(run_id, 2, proc=proc)
        wait_for_step(work_dir(hosts), rank=1)
        watchers = _pids(f"bench-watch-{run_id}")
        assert watchers, "no watch stream on the hosts"
        subprocess.run(["pkill", "-f", f"bench-watch-{run_id}"], check=False)
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr
    assert "'s watch stream ended" in stdout + stderr and "reopening it" in stdout + stderr
    result = results_of(tmp_path, run_id, "2x1", case="resnet50")
    assert result["status"] == "success" and result["metrics"]["steps"] == steps
    until(lambda: _pids(f"bench-watch-{run_id}") == [], 30, "no watcher left on the hosts")
