"""Watching a launched run until it ends: node states, lost hosts, stalled ranks,
the run's own deadline, and live progress (harness/core/progress.py, shown by progress_view.py).

The verdict carries a failure kind (harness/core/results.py FailureKind):
a node that exits non-zero is `job`; a host that stays unreachable for
`host_lost_s`, or a container the engine no longer has, is `infra`; no progress
event from a rank for `stall_timeout_s` is `stalled`; the deadline is `timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console

from cases.protocol import PROGRESS_KEYS
from harness.core.backend import ClusterBackend, NodeState, NodeWatch
from harness.core.events import Event
from harness.core.inventory import Cluster
from harness.core.plan import RunPlan
from harness.core.progress import ProgressBoard, event_text
from harness.core.progress_view import ProgressShown
from harness.core.results import FailureKind

POLL_S = 0.25  # the longest the watcher waits between looks at what the watch knows
HOST_LOST_S = 60.0  # a host that answers nothing for this long is lost
DEFAULT_STALL_TIMEOUT_S = 15 * 60.0


@dataclass(frozen=True)
class WatchLimits:
    timeout_s: float
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    host_lost_s: float = HOST_LOST_S

    @classmethod
    def for_cluster(cls, cluster: Cluster, timeout_s: float, stall_timeout_s: float | None = None) -> WatchLimits:
        """The run's deadline, its stall timeout (the cluster's unless given) and the cluster's host_lost_s."""
        return cls(timeout_s, stall_timeout_s or cluster.stall_timeout_s, cluster.host_lost_s)


@dataclass
class WaitOutcome:
    ok: bool
    kind: FailureKind | None = None
    failure: str | None = None
    failed_nodes: list[int] = field(default_factory=list)  # node ranks that ended badly
    lost_nodes: list[int] = field(default_factory=list)  # node ranks whose host was lost
    stalled_ranks: list[int] = field(default_factory=list)  # global ranks
    # When the harness decided to stop the run (controller's clock, ms since the epoch): a
    # rank that fails after it was stopped by the harness, not the cause (harness/core/diagnose.py).
    stop_decided_ms: int | None = None

    def decided_now(self) -> WaitOutcome:
        """This outcome, stamped with the moment the harness decides to stop the run."""
        if not self.ok and self.stop_decided_ms is None:
            self.stop_decided_ms = int(time.time() * 1000)
        return self


class StallWatch:
    """Per global rank, when its last event changed (controller clock, so host
    clock skew does not matter). A rank whose last event is `run_stop` is done."""

    def __init__(self, world_size: int, timeout_s: float, now: float) -> None:
        self.timeout_s = timeout_s
        self._last: dict[int, Event | None] = {rank: None for rank in range(world_size)}
        self._changed_at = {rank: now for rank in range(world_size)}

    def update(self, events: dict[int, Event], now: float) -> None:
        for rank, event in events.items():
            previous = self._last.get(rank)
            if previous is None or (event.key, event.time_ms) != (previous.key, previous.time_ms):
                if event.key in PROGRESS_KEYS or event.key == "run_stop" or previous is None:
                    self._changed_at[rank] = now
                self._last[rank] = event

    def stalled(self, now: float) -> list[int]:
        return [rank for rank, changed in sorted(self._changed_at.items())
                if now - changed >= self.timeout_s and not self._done(rank)]

    def last_event(self, rank: int) -> Event | None:
        return self._last.get(rank)

    def _done(self, rank: int) -> bool:
        event = self._last.get(rank)
        return event is not None and event.key == "run_stop"

    def describe(self, ranks: list[int], now: float) -> str:
        parts = []
        for rank in ranks:
            event = self._last.get(rank)
            what = "no event at all" if event is None else f"last event: {event_text(event)}"
            parts.append(f"rank {rank} ({what}, {now - self._changed_at[rank]:.0f} s ago)")
        return "; ".join(parts)


def _host(plan: RunPlan, node_rank: int) -> str:
    return plan.nodes[node_rank].host.name


@dataclass(frozen=True)
class StepProgress:
    """Rank 0's latest step as the watcher read it: the global batch over rank 0's
    step time, in samples per second (the number on the progress line)."""

    epoch: int | None
    step: int | None
    samples_per_s: float | None


def step_progress(event: Event) -> StepProgress | None:
    """The progress a ``step`` event shows; None for any other event."""
    if event.key != "step":
        return None
    value = event.value
    step_s = float(value.get("step_s") or 0.0)
    epoch, step = value.get("epoch"), value.get("step")
    return StepProgress(epoch=int(epoch) if isinstance(epoch, int) else None,
                        step=int(step) if isinstance(step, int) else None,
                        samples_per_s=float(value.get("samples", 0)) / step_s if step_s > 0 else None)


class Watcher:
    def __init__(self, plan: RunPlan, backend: ClusterBackend, console: Console, limits: WatchLimits,
                 on_progress: Callable[[StepProgress], None] | None = None) -> None:
        self.plan = plan
        self.backend = backend
        self.console = console
        self.limits = limits
        self.on_progress = on_progress  # told rank 0's latest step each time the event logs are read
        self._unreachable_since: dict[int, float] = {}
        self._unreachable_detail: dict[int, str] = {}

    def _lost(self, states: list[NodeState], now: float) -> list[int]:
        for state in states:
            if state.status == "unreachable":
                self._unreachable_since.setdefault(state.node_rank, state.silent_since or now)
                self._unreachable_detail[state.node_rank] = state.detail
            else:
                self._unreachable_since.pop(state.node_rank, None)
        return sorted(rank for rank, since in self._unreachable_since.items()
                      if now - since >= self.limits.host_lost_s)

    def wait(self) -> WaitOutcome:
        ranks = [node.node_rank for node in self.plan.nodes]
        with self.backend.watch(self.plan, ranks) as watch:
            return self._wait(watch).decided_now()

    def _wait(self, watch: NodeWatch) -> WaitOutcome:
        plan, limits = self.plan, self.limits
        start = time.monotonic()
        deadline = start + limits.timeout_s
        stall = StallWatch(plan.job.world_size, limits.stall_timeout_s, start)
        board = ProgressBoard({node.node_rank: node.host.name for node in plan.nodes}, plan.job.nproc_per_node,
                              plan.job.world_size, start)
        shown = ProgressShown(self.console, board)
        seen: Event | None = None
        with shown:
            while True:
                states = watch.states()
                for note in watch.notes():
                    self.console.print(f"watch: {note}")
                now = time.monotonic()
                lost = self._lost(states, now)
                if lost:
                    names = ", ".join(f"node {r} ({_host(plan, r)}): {self._unreachable_detail.get(r, '')}".rstrip(": ")
                                      for r in lost)
                    return WaitOutcome(False, "infra", f"host lost, no answer for {limits.host_lost_s:.0f} s: {names}",
                                       lost_nodes=lost)
                verdict = self._verdict(states)
                if verdict is not None:
                    return verdict
                if now > deadline:
                    return WaitOutcome(False, "timeout", f"timed out after {limits.timeout_s:.0f} s")
                reachable = [s.node_rank for s in states if s.status != "unreachable"]
                events = watch.events(reachable)
                stall.update(events, time.monotonic())
                board.update(events, time.monotonic())
                newest = events.get(0)
                if newest is not None and newest != seen:
                    seen = newest
                    if self.on_progress and (progress := step_progress(newest)):
                        self.on_progress(progress)
                stalled = stall.stalled(time.monotonic())
                if stalled:
                    return WaitOutcome(
                        False, "stalled",
                        f"stalled: no progress for {limits.stall_timeout_s:.0f} s from "
                        f"{stall.describe(stalled, time.monotonic())}",
                        stalled_ranks=stalled)
                shown.show(time.monotonic())
                watch.wait(POLL_S)

    def _verdict(self, states: list[NodeState]) -> WaitOutcome | None:
        failed = [s for s in states if s.status == "exited" and s.exit_code != 0]
        gone = [s for s in states if s.status == "gone"]
        if (failed or gone) and self._unreachable_since:
            # A node failing while another host is silent is most likely collateral
            # of that host: wait for its verdict (bounded by host_lost_s) first.
            return None
        judged = [s for s in states if s.kind is not None and s.status in ("exited", "gone")]
        if judged:  # the scheduler said how it ended
            detail = ", ".join(f"node {s.node_rank} ({_host(self.plan, s.node_rank)}): {s.detail}" for s in judged)
            return WaitOutcome(False, judged[0].kind or "infra", detail,
                               failed_nodes=[s.node_rank for s in judged])
        if gone:
            detail = ", ".join(f"node {s.node_rank} ({_host(self.plan, s.node_rank)}): {s.detail}" for s in gone)
            return WaitOutcome(False, "infra", f"container vanished: {detail}",
                               failed_nodes=[s.node_rank for s in gone + failed])
        if failed:
            detail = ", ".join(f"node {s.node_rank} ({_host(self.plan, s.node_rank)}) exited {s.exit_code}"
                               for s in failed)
            return WaitOutcome(False, "job", detail, failed_nodes=[s.node_rank for s in failed])
        if all(s.status == "exited" for s in states):
            return WaitOutcome(True)
        return None
