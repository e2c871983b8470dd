"""The runner's failure paths on the in-process fake backend (tests/fake_backend.py):
every way a run ends is classified, stopped, collected and recorded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from fake_backend import FakeBackend, FakeNode
from rich.console import Console

from harness.core import watch
from harness.core.inventory import load_inventory
from harness.core.job import make_job
from harness.core.runner import RunInterrupted, run_job
from harness.core.watch import WatchLimits
from harness.errors import RemoteCommandError, RunFailed
from harness.report.history import HISTORY_FILE
from harness.report.history import runs as history_runs


@pytest.fixture(autouse=True)
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "POLL_S", 0.01)
    monkeypatch.setattr("harness.core.backend.PROGRESS_READ_S", 0.05)
    monkeypatch.setattr("harness.core.runner.STACK_DUMP_WAIT_S", 0.0)


def inventory(tmp_path: Path):  # type: ignore[no-untyped-def]
    hosts = [{"name": name, "address": address, "user": "root", "devices": 1, "work_dir": "/scratch"}
             for name, address in (("alpha", "10.0.0.1"), ("beta", "10.0.0.2"))]
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"known_hosts": str(tmp_path / "kh")}, "hosts": hosts}))
    return load_inventory(path)


def start(tmp_path: Path, backend: FakeBackend, limits: WatchLimits | None = None, run_id: str = "flow"):  # type: ignore[no-untyped-def]
    job = make_job("resnet50", "cpu", "cpu", "2x1", run_id=run_id, timeout_s=30)
    console = Console(file=io.StringIO(), width=200)
    return run_job(job, inventory(tmp_path), backend, tmp_path / "results", console,
                   limits=limits or WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=30))


def recorded(tmp_path: Path, run_id: str = "flow") -> dict:
    out = tmp_path / "results" / run_id / "resnet50" / "2x1"
    assert (out / "README.md").is_file() and (out / "report.html").is_file() and (out / "plan.txt").is_file()
    return json.loads((out / "results.json").read_text())


def history(tmp_path: Path) -> list[tuple[str, str]]:
    return [(row.run_id, row.status) for row in history_runs(tmp_path / "results" / HISTORY_FILE)]


def test_a_failing_rank_is_job_and_its_error_leads_the_report(tmp_path: Path) -> None:
    world = (1000, "world", {"node_rank": 0})
    nodes = [FakeNode(["running", "running", "exit:1"],
                      {0: [world, (9000, "run_stop", {"status": "failed", "error": "gloo: Connection closed by peer"})]}),
             FakeNode(["running", "exit:1"],
                      {1: [world, (5000, "run_stop", {"status": "failed", "error": "injected failure at step 2"})]})]
    backend = FakeBackend(nodes)
    result = start(tmp_path, backend)
    assert result.status == "failed" and result.failure_kind == "job"
    lines = result.failure.splitlines()
    assert lines[0] == "first failure: rank 1: injected failure at step 2"
    assert "node 1 (beta) exited 1" in lines[1]
    assert any("rank 0 (collateral, +4.0 s after rank 1): gloo: Connection closed by peer" in line for line in lines)
    assert backend.called("stop") == [(0, 1)] and backend.called("collect") == [(0, 1)]
    assert recorded(tmp_path)["failure_kind"] == "job" and history(tmp_path) == [("flow", "failed")]


def test_a_node_failing_before_rendezvous_is_infra(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(["running"]), FakeNode(["exit:1"])])
    result = start(tmp_path, backend)
    assert result.failure_kind == "infra" and "node 1 (beta) exited 1" in result.failure
    assert "no rank joined the process group (rendezvous failed)" in result.failure


def test_a_host_that_stays_silent_is_lost_and_costs_only_itself(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(["running"], {0: [(1000, "world", {})]}), FakeNode(["running", "unreachable"])])
    result = start(tmp_path, backend, WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=0.3))
    assert result.status == "failed" and result.failure_kind == "infra"
    assert result.lost_hosts == ["beta"] and "host lost" in result.failure
    # the lost node is neither stopped nor collected nor cleaned: it does not answer
    assert backend.called("stop") == [(0,)] and backend.called("collect") == [(0,)]
    assert backend.called("cleanup") == [(0,)]
    lost = [node for node in result.nodes if node.host == "beta"][0]
    assert not lost.collected and lost.remote_run_dir == "/scratch/runs/flow/node1"
    assert any("beta" in item and "/scratch/runs/flow/node1" in item for item in result.left_on_hosts)
    assert recorded(tmp_path)["lost_hosts"] == ["beta"] and history(tmp_path) == [("flow", "failed")]


def test_a_node_failing_while_another_host_is_silent_waits_for_the_verdict(tmp_path: Path) -> None:
    # node 0 dies (collateral of node 1's silence): the run is infra (host lost), not job
    backend = FakeBackend([FakeNode(["running", "exit:1"]), FakeNode(["unreachable"])])
    result = start(tmp_path, backend, WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=0.3))
    assert result.failure_kind == "infra" and result.lost_hosts == ["beta"]


def test_a_short_silence_is_survived(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(["running", "running", "exit:0"]),
                           FakeNode(["running", "unreachable", "unreachable", "exit:0"])])
    result = start(tmp_path, backend, WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=5))
    assert result.failure_kind != "infra" or "host lost" not in (result.failure or "")
    assert result.lost_hosts == []


def test_no_progress_is_stalled_with_stacks_dumped_before_the_stop(tmp_path: Path) -> None:
    step = (1000, "step", {"epoch": 0, "step": 7})
    backend = FakeBackend([FakeNode(["running"], {0: [step]}), FakeNode(["running"], {1: [step]})])
    result = start(tmp_path, backend, WatchLimits(timeout_s=30, stall_timeout_s=0.3, host_lost_s=30))
    assert result.failure_kind == "stalled"
    assert "rank 0 (last event: epoch 0 step 7, " in result.failure and "rank 1" in result.failure
    names = [name for name, _ in backend.calls]
    assert names.index("dump_stacks") < names.index("stop") < names.index("collect")


def dump(*frames: str) -> str:
    """A faulthandler dump of an idle thread and the main thread; frames innermost first, "path:line:function"."""
    lines = ["Thread 0x00007f0000000002 (most recent call first):",
             '  File "/usr/lib/python3.11/threading.py", line 324 in wait', "",
             "Current thread 0x00007f0000000001 (most recent call first):"]
    for frame in (*frames, "/bench/cases/run.py:221:main", "/bench/cases/run.py:247:<module>"):
        path, line, function = frame.split(":")
        lines.append(f'  File "{path}", line {line} in {function}')
    return "\n".join(lines) + "\n"


def test_a_stalled_run_leads_with_the_rank_that_hung_apart(tmp_path: Path) -> None:
    step = (1000, "step", {"epoch": 0, "step": 7})
    waiting = dump("/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py:2501:all_reduce",
                   "/bench/cases/driver.py:180:train_step", "/bench/cases/driver.py:230:train")
    computing = dump("/bench/cases/resnet50/model.py:40:forward", "/bench/cases/driver.py:212:train")
    backend = FakeBackend([FakeNode(["running"], {0: [step]}, stacks={0: waiting}),
                           FakeNode(["running"], {1: [step]}, stacks={1: computing})])
    result = start(tmp_path, backend, WatchLimits(timeout_s=30, stall_timeout_s=0.3, host_lost_s=30))
    assert result.failure_kind == "stalled" and result.hang is not None
    lines = result.failure.splitlines()
    assert lines[0] == "hung apart from the others: rank 1 (beta) in cases/resnet50/model.py:40 in forward"
    assert lines[1] == ("rank 0 waits in torch/distributed/distributed_c10d.py:2501 in all_reduce "
                        "(from cases/driver.py:180 in train_step)")
    assert lines[2].startswith("stalled: no progress for 0 s")
    assert [group.ranks for group in result.hang.groups] == [[0], [1]]
    hang = recorded(tmp_path)["hang"]
    assert hang["outliers"] == [{"rank": 1, "host": "beta", "node_rank": 1,
                                 "training_frame": "cases/resnet50/model.py:40 in forward"}]
    report = (tmp_path / "results" / "flow" / "resnet50" / "2x1" / "report.html").read_text()
    assert "Where the ranks hung" in report and "cases/resnet50/model.py:40 in forward" in report


def test_the_deadline_is_timeout(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(["running"]), FakeNode(["running"])])
    result = start(tmp_path, backend, WatchLimits(timeout_s=0.2, stall_timeout_s=30, host_lost_s=30))
    assert result.failure_kind == "timeout" and "timed out after 0 s" in result.failure


@pytest.mark.parametrize(("said", "kind"), [("TIMEOUT", "timeout"), ("NODE_FAIL", "infra")])
def test_the_schedulers_verdict_decides_the_kind(tmp_path: Path, said: str, kind: str) -> None:
    backend = FakeBackend([FakeNode(["running", f"scheduler:{kind}:Slurm job 7 {said}"]), FakeNode(["running"])])
    result = start(tmp_path, backend)
    assert result.failure_kind == kind and f"Slurm job 7 {said}" in result.failure
    assert backend.called("stop") == [(0, 1)] and backend.called("collect") == [(0, 1)]


def test_an_image_that_cannot_be_built_is_infra_and_recorded(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(), FakeNode()], fail_image=RunFailed("base image cannot be pulled"))
    result = start(tmp_path, backend)
    assert result.failure_kind == "infra" and "image failed: base image cannot be pulled" in result.failure
    assert backend.called("launch") == [] and backend.called("collect") == []
    assert recorded(tmp_path)["status"] == "failed" and history(tmp_path) == [("flow", "failed")]


def test_a_failed_allocation_is_infra_starts_nothing_and_is_released(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(), FakeNode()], fail_allocate=RunFailed("Slurm job 7 still PENDING after 1800 s"))
    result = start(tmp_path, backend)
    assert result.failure_kind == "infra" and result.failure.startswith("allocate failed: Slurm job 7 still PENDING")
    assert backend.called("prepare_image") == [] and backend.called("launch") == []
    assert backend.called("release") == [()]
    assert recorded(tmp_path)["status"] == "failed"


def test_a_run_that_got_to_the_end_releases_its_allocation_once_after_cleanup(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(), FakeNode()])
    start(tmp_path, backend)
    assert backend.called("allocate") == [()] and backend.called("release") == [()]
    names = [name for name, _ in backend.calls]
    assert names.index("allocate") < names.index("launch") < names.index("cleanup") < names.index("release")


def test_a_launch_error_is_infra_and_whatever_started_is_cleaned(tmp_path: Path) -> None:
    error = RemoteCommandError("beta", ["docker", "run"], 125, "docker: Error response from daemon")
    backend = FakeBackend([FakeNode(), FakeNode()], fail_launch=error)
    result = start(tmp_path, backend)
    assert result.failure_kind == "infra" and "launch failed" in result.failure
    assert backend.called("cleanup") == [(0, 1)]


def test_an_interrupt_stops_collects_records_and_is_raised(tmp_path: Path) -> None:
    def interrupt(round_no: int) -> None:
        if round_no == 3:
            raise KeyboardInterrupt("SIGHUP")

    backend = FakeBackend([FakeNode(["running"]), FakeNode(["running"])], on_poll=interrupt)
    with pytest.raises(RunInterrupted) as raised:
        start(tmp_path, backend)
    assert raised.value.result.failure_kind == "interrupted"
    assert backend.called("stop") == [(0, 1)] and backend.called("cleanup") == [(0, 1)]
    assert recorded(tmp_path)["failure_kind"] == "interrupted" and history(tmp_path) == [("flow", "failed")]


def test_a_results_folder_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    from harness.core.record import RecordError

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "flow").write_text("a file where the run's folder should be")
    backend = FakeBackend([FakeNode(["exit:1"]), FakeNode(["exit:1"])])
    with pytest.raises((RecordError, OSError)) as raised:
        start(tmp_path, backend)
    assert backend.called("cleanup"), "containers must be removed even when the record cannot be written"
    assert isinstance(raised.value, RecordError)


def test_mem_counts_only_the_devices_the_job_ran_on(tmp_path: Path) -> None:
    import csv

    from harness.core.results import Metrics, NodeOutcome
    from harness.core.runner import _device_memory
    from harness.devices.sampler import CSV_COLUMNS

    node = tmp_path / "alpha_noderank0"
    node.mkdir()
    with (node / "monitor.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        # devices 0 and 1 are the job's; device 7 holds a colleague's 70 GiB
        for index, used in ((0, 10240), (1, 20480), (7, 71680)):
            writer.writerow([1000, "alpha", "device", index, used, 81920, "", "", "", "", "", "", ""])
    outcome = NodeOutcome(host="alpha", node_rank=0, container="c", exit_code=0, log_dir=str(node))
    metrics = _device_memory(Metrics(), [outcome], devices_used=2)
    assert (metrics.mem_used_gib, metrics.mem_total_gib) == (20.0, 80.0)
    assert metrics.mem_source == "device monitor (vendor tool)"
