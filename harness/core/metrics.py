"""Event log -> the vendor README metrics, exactly as DESIGN.md defines them."""

from __future__ import annotations

from harness.core.events import Event, last
from harness.core.results import Metrics
from harness.errors import RunFailed


def _required(events: list[Event], key: str) -> Event:
    event = last(events, key)
    if event is None:
        raise RunFailed(f"rank 0's event log has no {key!r} event; the run did not complete")
    return event


def eval_seconds(events: list[Event]) -> float:
    """Total time spent in end-of-epoch evaluations (eval_start -> eval_stop pairs)."""
    total_ms = 0
    opened: int | None = None
    for event in events:
        if event.key == "eval_start":
            opened = event.time_ms
        elif event.key == "eval_stop" and opened is not None:
            total_ms += event.time_ms - opened
            opened = None
    return total_ms / 1000.0


def compute_metrics(by_rank: dict[int, list[Event]]) -> Metrics:
    if 0 not in by_rank:
        raise RunFailed("no event log from rank 0 was collected")
    events = by_rank[0]
    process_start = _required(events, "process_start")
    train_start = _required(events, "train_start")
    train_stop = _required(events, "train_stop")
    run_stop = _required(events, "run_stop")
    summary = _required(events, "summary")
    world = _required(events, "world")

    samples = int(train_stop.value.get("samples", 0))
    steps = [e for e in events if e.key == "step"]
    if samples <= 0:
        samples = sum(int(e.value.get("samples", 0)) for e in steps)
    whole_s = (train_stop.time_ms - train_start.time_ms) / 1000.0
    train_s = whole_s - eval_seconds(events)
    core_s = float(summary.value.get("core_s") or sum(float(e.value.get("core_s", 0.0)) for e in steps))

    def rate(seconds: float) -> float | None:
        return samples / seconds if seconds > 0 and samples > 0 else None

    evals = [e for e in events if e.key == "eval_stop" and e.value.get("acc") is not None]
    # Device memory: the largest peak any rank saw (each rank holds one device).
    peaks = [(float(s.value["peak_mem_gib"]), s.value.get("mem_total_gib"), s.value.get("mem_source", ""))
             for rank_events in by_rank.values()
             if (s := last(rank_events, "summary")) is not None and s.value.get("peak_mem_gib") is not None]
    peak = max(peaks, key=lambda p: p[0]) if peaks else None
    return Metrics(
        e2e_time=(run_stop.time_ms - process_start.time_ms) / 1000.0,
        p_whole=rate(whole_s),
        p_train=rate(train_s),
        p_core=rate(core_s),
        acc=float(evals[-1].value["acc"]) if evals else None,
        mem_used_gib=peak[0] if peak else None,
        mem_total_gib=float(peak[1]) if peak and peak[1] is not None else None,
        mem_source=str(peak[2]) if peak else "none",
        samples=samples,
        steps=int(train_stop.value.get("steps", len(steps))),
        world_size=int(world.value.get("world_size", 0)),
        step_s_p50=summary.value.get("step_s_p50"),
        step_s_p90=summary.value.get("step_s_p90"),
        step_s_max=summary.value.get("step_s_max"),
        stop_reason=train_stop.value.get("stop_reason"),
    )
