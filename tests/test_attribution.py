"""Per-rank timing, stragglers, input-bound ranks and node verdicts, from event logs
recorded by a real 2-rank resnet50 run on cpu (torchrun, gloo; tests/fixtures/events)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cases.protocol import percentile
from harness.core.attribution import (
    MIN_STEPS,
    NodeFacts,
    attribute,
    find_input_bound,
    node_verdicts,
    rank_timings,
    train_window,
)
from harness.core.events import Event, read_event_files
from harness.core.results import RankTiming

RECORDED = Path(__file__).parent / "fixtures" / "events" / "resnet50_cpu_1x2"
HOSTS = {0: "alpha", 1: "beta"}


def _recorded() -> dict[int, list[Event]]:
    return read_event_files(RECORDED)


def _host_of(node_rank: int | None) -> str:
    return HOSTS.get(node_rank, "") if node_rank is not None else ""


def _scaled(events: list[Event], part: str, factor: float) -> list[Event]:
    """The rank's events with one timing part of every step multiplied (and step_s grown by as much)."""
    out = []
    for event in events:
        if event.key == "step" and part in event.value:
            grown = event.value[part] * factor
            value = {**event.value, part: grown, "step_s": event.value["step_s"] + grown - event.value[part]}
            event = dataclasses.replace(event, value=value)
        out.append(event)
    return out


def _no_why(timing: RankTiming, window: tuple[int, int] | None) -> str:
    return f"window {'known' if window else 'unknown'}"


def test_rank_timing_from_a_recorded_run_splits_each_step_into_its_parts() -> None:
    by_rank = _recorded()
    timings = rank_timings(by_rank, world_size=2, nproc_per_node=2, host_of=lambda n: "alpha")
    assert [t.rank for t in timings] == [0, 1]
    for timing in timings:
        steps = [e.value for e in by_rank[timing.rank] if e.key == "step"]
        assert timing.steps == len(steps) == 12
        timed = steps[1:]  # the warm-up step is left out
        assert timing.compute_s_p50 == percentile([s["compute_s"] for s in timed], 50)
        assert timing.data_s_p90 == percentile([s["data_s"] for s in timed], 90)
        assert timing.samples_per_s == pytest.approx(4 * len(timed) / sum(s["step_s"] for s in timed))
        for step in timed:  # the parts add up to the step
            assert step["data_s"] + step["compute_s"] + step["comm_s"] == pytest.approx(step["step_s"], abs=1e-6)
        assert timing.device == "cpu (Intel(R) Xeon(R) Processor)" or timing.device.startswith("cpu")
        assert (timing.node_rank, timing.local_rank, timing.host) == (0, timing.rank, "alpha")


def test_a_rank_whose_log_was_not_collected_is_listed_as_such() -> None:
    by_rank = _recorded()
    timings = rank_timings({0: by_rank[0]}, world_size=4, nproc_per_node=2, host_of=_host_of)
    assert [t.rank for t in timings] == [0, 1, 2, 3]
    missing = timings[3]
    assert missing.collected is False and missing.compute_s_p50 is None
    assert (missing.node_rank, missing.host) == (1, "beta")
    assert "no event log" in missing.note


def test_a_slowed_rank_is_named_with_its_score_and_a_healthy_run_names_none() -> None:
    by_rank = _recorded()
    facts = NodeFacts(hosts={0: "alpha"})
    healthy = attribute(by_rank, 2, 2, facts, _no_why)
    # Two ranks of one recorded healthy run: their compute p50s agree within the threshold.
    assert healthy.stragglers == []
    slow = attribute({0: by_rank[0], 1: _scaled(by_rank[1], "compute_s", 2.0)}, 2, 2, facts, _no_why)
    [straggler] = slow.stragglers
    assert straggler.rank == 1 and straggler.host == "alpha"
    timings = {t.rank: t for t in slow.ranks}
    assert straggler.score == pytest.approx(
        min(t.compute_s_p50 for t in timings.values() if t.compute_s_p50) / timings[1].compute_s_p50, abs=1e-3)
    assert straggler.score < 0.9 and straggler.why == "window known"
    [verdict] = slow.verdicts
    assert verdict.verdict == "slow" and "rank 1" in verdict.detail and f"{straggler.score:.2f}" in verdict.detail


def test_the_threshold_decides() -> None:
    by_rank = _recorded()
    slowed = {0: by_rank[0], 1: _scaled(by_rank[1], "compute_s", 1.5)}
    facts = NodeFacts(hosts={0: "alpha"})
    assert attribute(slowed, 2, 2, facts, _no_why, threshold=0.9).stragglers
    assert not attribute(slowed, 2, 2, facts, _no_why, threshold=0.3).stragglers


def test_an_input_bound_rank_names_its_loader_settings() -> None:
    by_rank = _recorded()
    starved = {0: _scaled(by_rank[0], "data_s", 2000.0), 1: by_rank[1]}
    result = attribute(starved, 2, 2, NodeFacts(hosts={0: "alpha"}), _no_why)
    [bound] = result.input_bound
    assert bound.rank == 0 and bound.data_share > 0.2
    assert (bound.num_workers, bound.batch_size) == (0, 4)
    assert result.verdicts[0].verdict == "input-bound" and "workers 0, batch 4" in result.verdicts[0].detail


def test_too_few_steps_say_nothing() -> None:
    by_rank = _recorded()
    few = {rank: [e for e in events if e.key != "step" or e.value["step"] < MIN_STEPS]
           for rank, events in by_rank.items()}
    few[1] = _scaled(few[1], "compute_s", 3.0)
    assert attribute(few, 2, 2, NodeFacts(hosts={0: "alpha"}), _no_why).stragglers == []
    assert find_input_bound(rank_timings(few, 2, 2, _host_of), 0.0, {}) == []


def test_node_verdicts_put_lost_hung_and_failed_before_timings() -> None:
    timings = [RankTiming(rank=r, node_rank=r, host=h, device="cpu") for r, h in enumerate(["a", "b", "c", "d", "e"])]
    facts = NodeFacts(hosts={0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}, lost={1}, hung={2: "cases/driver.py:212 in train"},
                      failed={3: "rank 3: RuntimeError: boom"}, uncollected={4})
    lines = [v.line() for v in node_verdicts(facts, timings, [], [])]
    assert lines == [
        "node 0 (a, cpu): ok",
        "node 1 (b, cpu): lost (no answer from the host during the run)",
        "node 2 (c, cpu): hung (in cases/driver.py:212 in train)",
        "node 3 (d, cpu): failed (rank 3: RuntimeError: boom)",
        "node 4 (e, cpu): unknown (its logs were not collected)",
    ]


def test_the_training_window_runs_from_train_start_to_train_stop() -> None:
    events = _recorded()[0]
    start = next(e.time_ms for e in events if e.key == "train_start")
    stop = next(e.time_ms for e in events if e.key == "train_stop")
    assert train_window(events) == (start, stop)
    assert train_window([e for e in events if e.key not in ("train_stop", "step")]) is None
    assert train_window(None) is None
