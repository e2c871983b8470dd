"""Every result broken down to where it came from: each rank's step time by part
(data, compute, the rest; cases/steptimes.py), the stragglers among the ranks,
the input-bound ones, and one verdict per node.

A rank's straggler score is the fastest rank's compute p50 over its own (1.0 =
the fastest). Compute is the rank's own forward + backward, apart from the
waits on the others, so a slow device scores low while the ranks it holds up
through the collectives do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cases.protocol import percentile
from harness.core.events import Event, last
from harness.core.hang import ranks_text
from harness.core.results import InputBound, NodeVerdict, RankTiming, Straggler

DEFAULT_STRAGGLER_THRESHOLD = 0.9
DEFAULT_INPUT_BOUND_SHARE = 0.2
MIN_STEPS = 3  # fewer timed steps say nothing about a rank
PARTS = ("step_s", "compute_s", "data_s", "comm_s")

# Why a rank is slow, from its node's monitor samples: (timing, train window ms) -> one line.
WhyLookup = Callable[[RankTiming, tuple[int, int] | None], str]


def _timed_steps(events: list[Event]) -> list[dict[str, float]]:
    """The step events' timings; the first step (warm-up: lazy init, autotuning)
    is left out when there are enough others."""
    steps = [e.value for e in events if e.key == "step"]
    return steps[1:] if len(steps) > MIN_STEPS else steps


def _device(world: Event | None) -> str:
    if world is None:
        return ""
    device, name = str(world.value.get("device", "")), str(world.value.get("device_name", ""))
    return f"{device} ({name})" if name and name != device else device


def rank_timing(rank: int, events: list[Event] | None, host_of: Callable[[int | None], str],
                node_of_rank: int | None = None) -> RankTiming:
    """One rank's timing from its events; `collected=False` when it has none."""
    if not events:
        return RankTiming(rank=rank, node_rank=node_of_rank, host=host_of(node_of_rank), collected=False,
                          note="no event log from this rank was collected")
    world = last(events, "world")
    node_rank = int(world.value["node_rank"]) if world and world.value.get("node_rank") is not None else node_of_rank
    steps = _timed_steps(events)
    columns = {part: [float(s[part]) for s in steps if isinstance(s.get(part), (int, float))] for part in PARTS}
    config = last(events, "config")
    local_batch = config.value.get("batch_size") if config else None
    step_total = sum(columns["step_s"])
    timing = RankTiming(
        rank=rank, node_rank=node_rank, host=host_of(node_rank),
        local_rank=int(world.value["local_rank"]) if world and world.value.get("local_rank") is not None else None,
        device=_device(world), steps=len([e for e in events if e.key == "step"]),
        samples_per_s=(int(local_batch) * len(columns["step_s"]) / step_total
                       if isinstance(local_batch, int) and step_total > 0 else None),
    )
    updates: dict[str, object] = {f"{part}_p{q}": percentile(columns[part], q) for part in PARTS for q in (50, 90)}
    if not columns["compute_s"] and steps:
        updates["note"] = "steps carry no compute time (written by a driver without per-part timing)"
    return timing.model_copy(update=updates)


def rank_timings(by_rank: dict[int, list[Event]], world_size: int, nproc_per_node: int,
                 host_of: Callable[[int | None], str]) -> list[RankTiming]:
    """Every rank of the world, collected or not, in rank order."""
    ranks = sorted(set(range(world_size)) | set(by_rank))
    return [rank_timing(rank, by_rank.get(rank), host_of, rank // nproc_per_node if nproc_per_node else None)
            for rank in ranks]


def train_window(events: list[Event] | None) -> tuple[int, int] | None:
    """train_start -> train_stop (or the last step), in ms: what the monitors are read over."""
    if not events:
        return None
    start = last(events, "train_start")
    stop = last(events, "train_stop") or last(events, "step")
    return (start.time_ms, stop.time_ms) if start and stop and stop.time_ms > start.time_ms else None


def find_stragglers(timings: list[RankTiming], threshold: float, why: WhyLookup,
                    windows: dict[int, tuple[int, int] | None]) -> list[Straggler]:
    timed = [t for t in timings if t.compute_s_p50 is not None and t.compute_s_p50 > 0
             and t.steps >= MIN_STEPS]
    if len(timed) < 2:
        return []
    fastest = min(t.compute_s_p50 for t in timed if t.compute_s_p50 is not None)
    found = []
    for t in timed:
        assert t.compute_s_p50 is not None
        score = fastest / t.compute_s_p50
        if score < threshold:
            found.append(Straggler(rank=t.rank, node_rank=t.node_rank, host=t.host, device=t.device,
                                   score=round(score, 3), compute_s_p50=t.compute_s_p50,
                                   fastest_compute_s_p50=fastest, why=why(t, windows.get(t.rank))))
    return found


def find_input_bound(timings: list[RankTiming], share: float, loader: dict[str, object]) -> list[InputBound]:
    found = []
    workers, batch = loader.get("num_workers"), loader.get("batch_size")
    for t in timings:
        if t.data_s_p50 is None or not t.step_s_p50 or t.steps < MIN_STEPS:
            continue
        if t.data_s_p50 / t.step_s_p50 > share:
            found.append(InputBound(rank=t.rank, node_rank=t.node_rank, host=t.host,
                                    data_share=round(t.data_s_p50 / t.step_s_p50, 3), data_s_p50=t.data_s_p50,
                                    step_s_p50=t.step_s_p50,
                                    num_workers=workers if isinstance(workers, int) else None,
                                    batch_size=batch if isinstance(batch, int) else None))
    return found


@dataclass
class NodeFacts:
    """What the run's outcome says about the nodes, apart from the timings."""

    hosts: dict[int, str]  # node rank -> host
    lost: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)  # node rank -> why (exit status, first error)
    hung: dict[int, str] = field(default_factory=dict)  # node rank -> where its ranks wait
    uncollected: set[int] = field(default_factory=set)


def node_verdicts(facts: NodeFacts, timings: list[RankTiming], stragglers: list[Straggler],
                  input_bound: list[InputBound]) -> list[NodeVerdict]:
    verdicts = []
    for node_rank, host in sorted(facts.hosts.items()):
        devices = [t.device for t in timings if t.node_rank == node_rank and t.device]
        slow = [s for s in stragglers if s.node_rank == node_rank]
        starved = [i for i in input_bound if i.node_rank == node_rank]
        if node_rank in facts.lost:
            verdict, detail = "lost", "no answer from the host during the run"
        elif node_rank in facts.hung:
            verdict, detail = "hung", f"in {facts.hung[node_rank]}"
        elif node_rank in facts.failed:
            verdict, detail = "failed", facts.failed[node_rank]
        elif node_rank in facts.uncollected:
            verdict, detail = "unknown", "its logs were not collected"
        elif slow:
            scores = ", ".join(f"{s.score:.2f}" for s in slow)
            verdict = "slow"
            detail = f"{ranks_text([s.rank for s in slow])}, score {scores}, why: {slow[0].why}"
        elif starved:
            first = starved[0]
            verdict = "input-bound"
            detail = (f"{ranks_text([i.rank for i in starved])}, data {first.data_share:.0%} of the step, "
                      f"workers {first.num_workers}, batch {first.batch_size}")
        else:
            verdict, detail = "ok", ""
        verdicts.append(NodeVerdict(node_rank=node_rank, host=host, devices=devices, verdict=verdict, detail=detail))
    return verdicts


@dataclass
class Attribution:
    ranks: list[RankTiming]
    stragglers: list[Straggler]
    input_bound: list[InputBound]
    verdicts: list[NodeVerdict]


def attribute(by_rank: dict[int, list[Event]], world_size: int, nproc_per_node: int, facts: NodeFacts,
              why: WhyLookup, threshold: float = DEFAULT_STRAGGLER_THRESHOLD,
              input_share: float = DEFAULT_INPUT_BOUND_SHARE) -> Attribution:
    def host_of(node_rank: int | None) -> str:
        return facts.hosts.get(node_rank, "") if node_rank is not None else ""

    timings = rank_timings(by_rank, world_size, nproc_per_node, host_of)
    windows = {rank: train_window(events) for rank, events in by_rank.items()}
    stragglers = find_stragglers(timings, threshold, why, windows)
    config = last(by_rank.get(0, []), "config")
    input_bound = find_input_bound(timings, input_share, dict(config.value) if config else {})
    return Attribution(timings, stragglers, input_bound, node_verdicts(facts, timings, stragglers, input_bound))
