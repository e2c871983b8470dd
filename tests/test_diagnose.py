"""The failure report's order (harness/core/diagnose.py), from recorded event lists:
a rank the harness stopped (SIGTERM, or anything it reports after the harness
decided to stop) is never the first failure; the harness's reason leads."""

from __future__ import annotations

from harness.core.diagnose import failure_report, split_failures
from harness.core.events import Event
from harness.core.results import HangOutlier, HangTriage, StackGroup
from harness.core.watch import WaitOutcome

DECIDED_MS = 1_700_000_000_000  # when the harness decided to stop (controller's clock)
TERMINATED = "Terminated: terminated by signal 15"


def ranks(*failures: tuple[int, int, str]) -> dict[int, list[Event]]:
    """rank -> its world event and, given (rank, time_ms, error), a failed run_stop."""
    by_rank: dict[int, list[Event]] = {}
    for rank, time_ms, error in failures:
        by_rank[rank] = [Event(DECIDED_MS - 60_000, "world", rank, {}),
                         Event(time_ms, "run_stop", rank, {"status": "failed", "error": error})]
    return by_rank


LOST = WaitOutcome(False, "infra", "host lost, no answer for 30 s: node 1 (beta)", lost_nodes=[1],
                   stop_decided_ms=DECIDED_MS)


def test_a_lost_host_leads_and_the_stopped_rank_follows() -> None:
    # the recorded night: the healthy node stopped by the harness wrote its SIGTERM first
    lines = failure_report(LOST, [], ranks((0, DECIDED_MS + 400, TERMINATED))).splitlines()
    assert lines == ["host lost, no answer for 30 s: node 1 (beta)",
                     f"stopped by the harness: rank 0 ({TERMINATED})"]


def test_a_terminated_rank_is_the_harness_stop_even_without_the_decision_time() -> None:
    outcome = WaitOutcome(False, "infra", "host lost, no answer for 30 s: node 1 (beta)", lost_nodes=[1])
    lines = failure_report(outcome, [], ranks((0, 5, TERMINATED))).splitlines()
    assert lines[0].startswith("host lost") and not any("first failure" in line for line in lines)


def test_a_failure_before_the_stop_of_a_lost_host_run_follows_the_loss() -> None:
    events = ranks((0, DECIDED_MS - 5000, "RuntimeError: gloo: Connection reset by peer"),
                   (2, DECIDED_MS + 300, "RuntimeError: gloo: Connection closed by peer"),
                   (3, DECIDED_MS + 200, TERMINATED))
    lines = failure_report(LOST, [], events).splitlines()
    assert lines == ["host lost, no answer for 30 s: node 1 (beta)",
                     "rank 0 failed before the harness stopped the run: RuntimeError: gloo: Connection reset by peer",
                     f"stopped by the harness: rank 3 ({TERMINATED}); rank 2 (RuntimeError: gloo: Connection closed by peer)"]


def test_a_stall_leads_with_where_the_ranks_hung() -> None:
    hang = HangTriage(groups=[StackGroup(ranks=[0, 2, 3], frames=["torch/distributed/distributed_c10d.py:2501 in all_reduce"]),
                              StackGroup(ranks=[1], frames=["cases/driver.py:212 in train"])],
                      outliers=[HangOutlier(rank=1, host="beta", node_rank=0, training_frame="cases/driver.py:212 in train")],
                      summary="hung apart from the others: rank 1 (beta) in cases/driver.py:212 in train\n"
                              "ranks 0, 2, 3 wait in torch/distributed/distributed_c10d.py:2501 in all_reduce")
    outcome = WaitOutcome(False, "stalled", "stalled: no progress for 15 s from rank 1 (last event step, 20 s ago)",
                          stalled_ranks=[1], stop_decided_ms=DECIDED_MS)
    events = ranks(*((rank, DECIDED_MS + 2500 + rank, TERMINATED) for rank in range(4)))
    lines = failure_report(outcome, [], events, hang).splitlines()
    assert lines == ["hung apart from the others: rank 1 (beta) in cases/driver.py:212 in train",
                     "ranks 0, 2, 3 wait in torch/distributed/distributed_c10d.py:2501 in all_reduce",
                     "stalled: no progress for 15 s from rank 1 (last event step, 20 s ago)",
                     f"stopped by the harness: ranks 0-3 ({TERMINATED})"]


def test_the_deadline_leads_a_timed_out_run() -> None:
    outcome = WaitOutcome(False, "timeout", "timed out after 3600 s", stop_decided_ms=DECIDED_MS)
    events = ranks((1, DECIDED_MS + 100, TERMINATED), (0, DECIDED_MS + 900, "RuntimeError: gloo: Connection closed"))
    lines = failure_report(outcome, [], events).splitlines()
    assert lines[0] == "timed out after 3600 s"
    assert lines[1] == f"stopped by the harness: rank 1 ({TERMINATED}); rank 0 (RuntimeError: gloo: Connection closed)"


def test_a_rank_that_failed_by_itself_still_leads_a_job_failure() -> None:
    outcome = WaitOutcome(False, "job", "node 1 (beta) exited 1", failed_nodes=[1], stop_decided_ms=DECIDED_MS)
    events = ranks((1, DECIDED_MS - 800, "RuntimeError: injected failure at step 2 on rank 1"),
                   (2, DECIDED_MS - 300, "RuntimeError: gloo: Connection closed by peer"),
                   (0, DECIDED_MS + 1200, TERMINATED))
    lines = failure_report(outcome, [], events).splitlines()
    assert lines == ["first failure: rank 1: RuntimeError: injected failure at step 2 on rank 1",
                     "node 1 (beta) exited 1",
                     "rank 2 (collateral, +0.5 s after rank 1): RuntimeError: gloo: Connection closed by peer",
                     f"stopped by the harness: rank 0 ({TERMINATED})"]


def test_a_host_clock_ahead_cannot_hide_the_cause_of_a_job_failure() -> None:
    outcome = WaitOutcome(False, "job", "node 1 (beta) exited 1", failed_nodes=[1], stop_decided_ms=DECIDED_MS)
    events = ranks((1, DECIDED_MS + 700, "RuntimeError: CUDA out of memory"), (0, DECIDED_MS + 900, TERMINATED))
    split = split_failures(outcome, events)
    assert [f.rank for f in split.own] == [1] and [f.rank for f in split.stopped] == [0]
    assert failure_report(outcome, [], events).splitlines()[0] == "first failure: rank 1: RuntimeError: CUDA out of memory"


def test_a_sigterm_long_before_the_harness_decided_is_not_its_own() -> None:
    # someone stopped node 0 by hand; the harness only saw the node exit afterwards
    outcome = WaitOutcome(False, "job", "node 0 (alpha) exited 143", failed_nodes=[0], stop_decided_ms=DECIDED_MS)
    events = ranks((0, DECIDED_MS - 10_000, TERMINATED), (1, DECIDED_MS + 500, TERMINATED))
    lines = failure_report(outcome, [], events).splitlines()
    assert lines[0] == f"first failure: rank 0: {TERMINATED}"
    assert lines[-1] == f"stopped by the harness: rank 1 ({TERMINATED})"


def test_a_rendezvous_failure_is_still_named() -> None:
    outcome = WaitOutcome(False, "job", "node 1 (beta) exited 1", failed_nodes=[1], stop_decided_ms=DECIDED_MS)
    assert failure_report(outcome, [], {}).splitlines() == [
        "node 1 (beta) exited 1", "no rank joined the process group (rendezvous failed)"]
