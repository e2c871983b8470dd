"""The failure report a morning reader sees: the root cause first.

When one rank fails, the others fail after it (gloo's `Connection closed by
peer`, errors raised while being stopped). The rank whose `run_stop` came
first, by event time, is the root cause; the rest follow, marked collateral.

When the harness itself ended the run (a lost host, a stall, the deadline, an
interrupt), it stops the ranks that still run: their `Terminated` errors, and
whatever a rank reports after the moment the harness decided to stop, are the
harness's doing and never the first failure. The report then leads with the
harness's reason (for a stall, where the ranks hung: harness/core/hang.py) and
lists those ranks afterwards as stopped by the harness. An interrupt of the
controller leads its report too: the signal may have reached the ranks as well,
so what they raised from CLOCK_SLACK_MS before it on is the interrupt's doing,
and a "job" verdict whose ranks were all ended by a signal is an interrupt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.core.events import Event, last
from harness.core.hang import ranks_text
from harness.core.results import FailureKind, HangTriage, NodeOutcome
from harness.core.watch import WaitOutcome

LAST_LINES = 15
# What cases/run.py records when SIGTERM (the harness's stop, docker stop) ends a rank;
# KeyboardInterrupt: a SIGINT that reached the rank itself.
TERMINATED_RE = re.compile(r"^(?:Terminated: terminated by signal \d+|KeyboardInterrupt\b)")
# A Terminated rank this long before the harness decided to stop was stopped by
# something else; the margin absorbs the hosts' clocks against the controller's.
CLOCK_SLACK_MS = 2000


@dataclass(frozen=True)
class RankFailure:
    rank: int
    time_ms: int
    error: str


def rank_failures(by_rank: dict[int, list[Event]]) -> list[RankFailure]:
    """Every rank that reported a failure, earliest first."""
    found = []
    for rank, events in by_rank.items():
        stop = last(events, "run_stop")
        if stop is not None and stop.value.get("status") == "failed":
            found.append(RankFailure(rank, stop.time_ms, str(stop.value.get("error", "failed"))))
    return sorted(found, key=lambda f: (f.time_ms, f.rank))


def refine_kind(outcome: WaitOutcome, by_rank: dict[int, list[Event]]) -> FailureKind | None:
    """A node that exited non-zero before any rank joined the process group
    failed at rendezvous: the fabric or a peer, not the training code."""
    if outcome.kind != "job":
        return outcome.kind
    return "job" if rank_failures(by_rank) or _joined(by_rank) else "infra"


def _joined(by_rank: dict[int, list[Event]]) -> bool:
    """Whether any rank got past init_process_group (its `world` event)."""
    return any(last(events, "world") is not None for events in by_rank.values())


@dataclass(frozen=True)
class SplitFailures:
    own: list[RankFailure]  # earliest first: the ranks that failed by themselves
    stopped: list[RankFailure]  # the ranks the harness stopped after it had judged the run


def stopped_by_harness(failure: RankFailure, outcome: WaitOutcome) -> bool:
    """Whether a rank's failure is the harness's own stop of a run it had already judged failed."""
    if outcome.ok:
        return False
    decided = outcome.stop_decided_ms
    if TERMINATED_RE.match(failure.error):
        return decided is None or failure.time_ms >= decided - CLOCK_SLACK_MS
    if outcome.kind == "interrupted":
        # The signal may have reached the ranks too (a process group, a cgroup): whatever a rank
        # raised about when the controller got it (an AttributeError from inside DDP's constructor)
        # is the interrupt's doing.
        return decided is None or failure.time_ms >= decided - CLOCK_SLACK_MS
    return decided is not None and failure.time_ms > decided


def interrupted_outcome(outcome: WaitOutcome, by_rank: dict[int, list[Event]], interrupted: bool) -> WaitOutcome:
    """A run the controller was interrupted in, judged a job failure only because its ranks ended by
    a signal (the same SIGINT/SIGTERM reached them): interrupted, not a rank's failure."""
    if not interrupted or outcome.kind != "job":
        return outcome
    failures = rank_failures(by_rank)
    if not failures or not all(TERMINATED_RE.match(f.error) for f in failures):
        return outcome
    return WaitOutcome(False, "interrupted", f"interrupted: the ranks were ended by a signal ({outcome.failure})",
                       failed_nodes=outcome.failed_nodes, stop_decided_ms=failures[0].time_ms)


def split_failures(outcome: WaitOutcome, by_rank: dict[int, list[Event]]) -> SplitFailures:
    failures = rank_failures(by_rank)
    stopped = [f for f in failures if stopped_by_harness(f, outcome)]
    own = [f for f in failures if f not in stopped]
    if outcome.kind == "job" and not own:
        # A rank's own failure ended this run; a host clock ahead of the controller's
        # can put it after the decision: the earliest error that is not a stop is it.
        cause = next((f for f in failures if not TERMINATED_RE.match(f.error)), None)
        if cause is not None:
            own, stopped = [cause], [f for f in stopped if f is not cause]
    return SplitFailures(own, stopped)


def _stopped_line(stopped: list[RankFailure]) -> str:
    by_error: dict[str, list[int]] = {}
    for failure in stopped:
        by_error.setdefault(failure.error, []).append(failure.rank)
    return "stopped by the harness: " + "; ".join(f"{ranks_text(ranks)} ({error})" for error, ranks in by_error.items())


def failure_report(outcome: WaitOutcome, nodes: list[NodeOutcome], by_rank: dict[int, list[Event]],
                   hang: HangTriage | None = None) -> str:
    """The root cause first: the first rank to fail by itself when a rank ended the
    run, else the harness's reason (a stall's hang triage, a lost host, the deadline)."""
    split = split_failures(outcome, by_rank)
    lines: list[str] = []
    if outcome.kind == "job" and split.own:
        first = split.own[0]
        lines.append(f"first failure: rank {first.rank}: {first.error}")
        lines.append(outcome.failure or "run failed")
        for later in split.own[1:]:
            delay = (later.time_ms - first.time_ms) / 1000
            lines.append(f"rank {later.rank} (collateral, {delay:+.1f} s after rank {first.rank}): {later.error}")
    else:
        if hang is not None:
            lines += hang.summary.splitlines()
        lines.append(outcome.failure or "run failed")
        if outcome.kind == "job" and not split.stopped and not _joined(by_rank):
            lines.append("no rank joined the process group (rendezvous failed)")
        stop = "the interrupt" if outcome.kind == "interrupted" else "the harness stopped the run"
        lines += [f"rank {f.rank} failed before {stop}: {f.error}" for f in split.own]
    if split.stopped:
        lines.append(_stopped_line(split.stopped))
    for node in nodes:
        if node.node_rank in outcome.failed_nodes or node.exit_code not in (0, None) or not node.collected:
            lines.append(f"--- node {node.node_rank} ({node.host}, {node.log_dir}):")
            lines += node.notes
            lines += node.last_lines[-LAST_LINES:]
    return "\n".join(lines)
