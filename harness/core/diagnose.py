"""The failure report a morning reader sees: the root cause first.

When one rank fails, the others fail after it (gloo's `Connection closed by
peer`, errors raised while being stopped). The rank whose `run_stop` came
first, by event time, is the root cause; the rest follow, marked collateral.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.events import Event, last
from harness.core.results import FailureKind, NodeOutcome
from harness.core.watch import WaitOutcome

LAST_LINES = 15


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


def failure_report(outcome: WaitOutcome, nodes: list[NodeOutcome], by_rank: dict[int, list[Event]]) -> str:
    failures = rank_failures(by_rank)
    lines: list[str] = []
    if failures:
        first = failures[0]
        lines.append(f"first failure: rank {first.rank}: {first.error}")
    lines.append(outcome.failure or "run failed")
    if outcome.kind == "job" and not failures and not _joined(by_rank):
        lines.append("no rank joined the process group (rendezvous failed)")
    for later in failures[1:]:
        delay = (later.time_ms - failures[0].time_ms) / 1000
        lines.append(f"rank {later.rank} (collateral, {delay:+.1f} s after rank {failures[0].rank}): {later.error}")
    for node in nodes:
        if node.node_rank in outcome.failed_nodes or node.exit_code not in (0, None) or not node.collected:
            lines.append(f"--- node {node.node_rank} ({node.host}, {node.log_dir}):")
            lines += node.notes
            lines += node.last_lines[-LAST_LINES:]
    return "\n".join(lines)
