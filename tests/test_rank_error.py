"""A failed node's lines are its failing rank's own exception (harness/core/rank_error.py), and an
interrupted run says so first (harness/core/diagnose.py).

The fixtures are real output: tests/fixtures/rank_failure/fail.py run with
`torchrun --nproc-per-node 2 --log-dir ... --redirects 3 --tee 3` and gloo (rank 1 raises, rank 0
dies in the barrier after it; node_noderank0/container.log is torchrun's whole output, laid out as a
node's collected folder, torchrun's per-rank folders under container/torchrun/), and a node of a
SIGHUP'd 2x1 run of the test hosts (sighup_noderank0)."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.core.diagnose import failure_report, interrupted_outcome, split_failures
from harness.core.events import Event
from harness.core.rank_error import last_traceback, node_error_lines, with_rank_errors, without_launcher_noise
from harness.core.results import NodeOutcome
from harness.core.watch import WaitOutcome

FIXTURES = Path(__file__).parent / "fixtures" / "rank_failure"
DECIDED_MS = 1_700_000_000_000
TERMINATED = "Terminated: terminated by signal 15"
RANK1_ERROR = [
    "rank 1's own error (container/torchrun/none_hi2e93nd/attempt_0/1/stderr.log):",
    '  File "/tmp/i20a/fail.py", line 23, in <module>',
    "    train()",
    '  File "/tmp/i20a/fail.py", line 16, in train',
    "    total = 1 + load_batch(rank)",
    '  File "/tmp/i20a/fail.py", line 11, in load_batch',
    '    raise ValueError(f"bad batch shape on rank {rank}: expected [4, 3, 32, 32]") from None',
    "ValueError: bad batch shape on rank 1: expected [4, 3, 32, 32]",
]


def node_folder(tmp_path: Path, name: str = "node_noderank0", keep_rank_files: bool = True) -> Path:
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    if not keep_rank_files:
        shutil.rmtree(folder / "container" / "torchrun")
    return folder


def outcome_of(folder: Path, exit_code: int | None = 1, node_rank: int = 0) -> NodeOutcome:
    """As a payload collects it: the last 30 lines of the node's output."""
    tail = (folder / "container.log").read_text().splitlines()[-30:]
    return NodeOutcome(host="alpha", node_rank=node_rank, container="c", exit_code=exit_code, log_dir=str(folder),
                       last_lines=tail)


def failed(rank: int, time_ms: int, error: str) -> list[Event]:
    return [Event(DECIDED_MS - 60_000, "world", rank, {}),
            Event(time_ms, "run_stop", rank, {"status": "failed", "error": error})]


def test_the_last_traceback_keeps_the_innermost_frames_and_the_message_without_the_marks() -> None:
    text = (FIXTURES / "node_noderank0/container/torchrun/none_hi2e93nd/attempt_0/0/stderr.log").read_text()
    found = last_traceback(text, frames_shown=2)
    assert found is not None
    assert found.lines() == [
        '  File "/work/main/.venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", line 83, in wrapper',
        "    return func(*args, **kwargs)",
        '  File "/work/main/.venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py", line 6371, '
        "in barrier",
        "    work.wait()",
    ] + [line.removeprefix("[rank0]: ") for line in text.splitlines()[-1:]]
    assert not any(line.strip().startswith("^") for line in found.lines())
    assert last_traceback("no traceback here\n") is None


def test_a_failed_node_shows_its_failing_ranks_own_exception_from_its_stderr(tmp_path: Path) -> None:
    folder = node_folder(tmp_path)
    assert node_error_lines(folder, 0, 2, own=[1, 0], stopped=[]) == RANK1_ERROR
    # the root cause on another node: this node's rank is its collateral
    collateral = node_error_lines(folder, 0, 2, own=[5, 0], stopped=[])
    assert collateral is not None and collateral[0] == (
        "rank 0's error, collateral of rank 5 (container/torchrun/none_hi2e93nd/attempt_0/0/stderr.log):")
    assert collateral[-1].startswith("RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/")
    # ranks the harness stopped: the message only, labelled
    stopped = node_error_lines(folder, 0, 2, own=[], stopped=[0])
    assert stopped is not None and len(stopped) == 1
    assert stopped[0].startswith("rank 0 was stopped by the harness: RuntimeError: [/__w/pytorch")


def test_without_the_rank_files_the_ranks_prefixed_lines_of_the_node_output_serve(tmp_path: Path) -> None:
    folder = node_folder(tmp_path, keep_rank_files=False)
    lines = node_error_lines(folder, 0, 2, own=[1], stopped=[])
    assert lines is not None
    assert lines[0] == "rank 1's own error (container.log):" and lines[1:] == RANK1_ERROR[1:]


def test_the_node_lines_of_a_failed_run_lead_with_the_ranks_error_not_torchruns_summary(tmp_path: Path) -> None:
    folder = node_folder(tmp_path)
    raw = outcome_of(folder)
    assert raw.last_lines[0].strip().startswith("^") or any("ChildFailedError" in line for line in raw.last_lines)
    events = {1: failed(1, DECIDED_MS - 900, "ValueError: bad batch shape on rank 1: expected [4, 3, 32, 32]"),
              0: failed(0, DECIDED_MS - 400, "RuntimeError: gloo: Connection closed by peer")}
    outcome = WaitOutcome(False, "job", "node 0 (alpha) exited 1", failed_nodes=[0], stop_decided_ms=DECIDED_MS)
    split = split_failures(outcome, events)
    ok = NodeOutcome(host="beta", node_rank=1, container="c1", exit_code=0, log_dir=str(tmp_path / "none"),
                     last_lines=["kept as it was"])
    nodes = with_rank_errors([raw, ok], outcome.failed_nodes, 2, [f.rank for f in split.own],
                             [f.rank for f in split.stopped])
    assert nodes[0].last_lines == RANK1_ERROR and nodes[1].last_lines == ["kept as it was"]
    report = failure_report(outcome, nodes, events).splitlines()
    assert report[0] == "first failure: rank 1: ValueError: bad batch shape on rank 1: expected [4, 3, 32, 32]"
    section = report[report.index(f"--- node 0 (alpha, {folder}):") + 1:]
    assert section == RANK1_ERROR
    assert not any("^^^" in line or "ChildFailedError" in line or "=====" in line for line in report)


def test_with_no_rank_traceback_the_node_output_is_shown_without_torchruns_noise(tmp_path: Path) -> None:
    folder = node_folder(tmp_path, keep_rank_files=False)
    text = (folder / "container.log").read_text()
    (folder / "container.log").write_text("\n".join(line for line in text.splitlines() if "[rank" not in line))
    (node,) = with_rank_errors([outcome_of(folder)], [0], 2, [1], [])
    assert node.last_lines and all("OMP_NUM_THREADS" in line or "*****" in line or line.startswith(("W1206", "E1206"))
                                   for line in node.last_lines)
    kept = without_launcher_noise(text.splitlines()[-12:])  # a tail that begins inside torchrun's summary
    assert kept == []


def test_an_interrupted_run_says_interrupted_first_and_its_ranks_were_stopped(tmp_path: Path) -> None:
    folder = node_folder(tmp_path, "sighup_noderank0")
    outcome = WaitOutcome(False, "interrupted", "interrupted (SIGINT/SIGTERM/SIGHUP) while training",
                          stop_decided_ms=DECIDED_MS)
    events = {0: failed(0, DECIDED_MS + 300, TERMINATED)}
    split = split_failures(outcome, events)
    nodes = with_rank_errors([outcome_of(folder, exit_code=1)], [], 1, [f.rank for f in split.own],
                             [f.rank for f in split.stopped])
    report = failure_report(outcome, nodes, events).splitlines()
    assert report[0] == "interrupted (SIGINT/SIGTERM/SIGHUP) while training"
    assert not any(line.startswith("first failure") for line in report)
    assert report[1] == f"stopped by the harness: rank 0 ({TERMINATED})"
    assert report[-1] == f"rank 0 was stopped by the harness: {TERMINATED}"


def test_what_a_rank_raised_while_the_interrupt_stopped_it_is_collateral() -> None:
    outcome = WaitOutcome(False, "interrupted", "interrupted (SIGINT/SIGTERM/SIGHUP) while training",
                          stop_decided_ms=DECIDED_MS)
    dynamo = "AttributeError: module 'torch._dynamo' has no attribute 'utils'"
    events = {0: failed(0, DECIDED_MS - 600, dynamo), 1: failed(1, DECIDED_MS + 200, TERMINATED),
              2: failed(2, DECIDED_MS - 60_000, "RuntimeError: CUDA out of memory")}
    report = failure_report(outcome, [], events).splitlines()
    assert report[0].startswith("interrupted")
    assert "rank 2 failed before the interrupt: RuntimeError: CUDA out of memory" in report
    assert report[-1] == f"stopped by the harness: rank 0 ({dynamo}); rank 1 ({TERMINATED})"


def test_a_job_verdict_from_ranks_the_same_signal_ended_is_an_interrupt() -> None:
    job = WaitOutcome(False, "job", "node 0 (alpha) exited 1", failed_nodes=[0], stop_decided_ms=DECIDED_MS)
    signalled = {0: failed(0, DECIDED_MS - 5000, TERMINATED), 1: failed(1, DECIDED_MS - 4900, "KeyboardInterrupt")}
    judged = interrupted_outcome(job, signalled, interrupted=True)
    assert judged.kind == "interrupted" and judged.stop_decided_ms == DECIDED_MS - 5000
    report = failure_report(judged, [], signalled).splitlines()
    assert report[0].startswith("interrupted") and not any(line.startswith("first failure") for line in report)
    # a rank's own error, or no interrupt at all: the job failure stands
    own = {**signalled, 2: failed(2, DECIDED_MS - 6000, "RuntimeError: injected failure")}
    assert interrupted_outcome(job, own, interrupted=True).kind == "job"
    assert interrupted_outcome(job, signalled, interrupted=False).kind == "job"
