"""What a run's outcome says about each node, for its verdict (harness/core/attribution.py):
lost, hung (and where, from the hang triage), failed by itself, logs not collected."""

from __future__ import annotations

from harness.core.attribution import NodeFacts
from harness.core.diagnose import split_failures
from harness.core.events import Event
from harness.core.hang import ranks_text
from harness.core.plan import RunPlan
from harness.core.results import HangTriage, NodeOutcome
from harness.core.watch import WaitOutcome


def _where_hung(node_ranks: list[int], hang: HangTriage | None) -> str:
    if hang is None:
        return ""
    outliers = [o for o in hang.outliers if o.rank in node_ranks]
    if outliers:
        return f"in {outliers[0].training_frame}, apart from the others ({ranks_text([o.rank for o in outliers])})"
    for group in hang.groups:
        if set(node_ranks) & set(group.ranks):
            frame = group.training_frame or (group.frames[0] if group.frames else "")
            waiting = "waiting on " + ranks_text([o.rank for o in hang.outliers]) + " " if hang.outliers else ""
            return f"{waiting}in {frame}".strip() if frame else waiting.strip()
    return ""


def node_facts(plan: RunPlan, outcome: WaitOutcome, nodes: list[NodeOutcome], by_rank: dict[int, list[Event]],
               hang: HangTriage | None) -> NodeFacts:
    nproc = plan.job.nproc_per_node
    lost = set(outcome.lost_nodes)
    first_error: dict[int, str] = {}
    for failure in reversed(split_failures(outcome, by_rank).own):  # the earliest is written last: it wins
        first_error[failure.rank // nproc] = f"rank {failure.rank}: {failure.error}"
    exits = {node.node_rank: node.exit_code for node in nodes}
    hung: dict[int, str] = {}
    if outcome.kind == "stalled":
        for node_rank in sorted({rank // nproc for rank in outcome.stalled_ranks} - lost):
            silent = [r for r in outcome.stalled_ranks if r // nproc == node_rank]
            hung[node_rank] = _where_hung(silent, hang) or f"{ranks_text(silent)} silent"
    return NodeFacts(
        hosts={node.node_rank: node.host.name for node in plan.nodes}, lost=lost, hung=hung,
        failed={k: first_error.get(k, f"exit status {exits.get(k)}") for k in outcome.failed_nodes if k not in lost},
        uncollected={node.node_rank for node in nodes if not node.collected} - lost,
    )
