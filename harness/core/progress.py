"""Live progress while a run trains: one line per node, worded for a person.

The watcher (harness/core/watch.py) hands every rank's latest event to a
ProgressBoard each time it reads them; the board keeps each rank's last step
and what it is doing now, and renders one line per node:

    node 0 (alpha): epoch 1 step 12/40 · 245.3 samples/s (2 ranks) · slowest rank 1 118.0/s · 42s elapsed · ~1m10s left

A rank's samples/s is its share of the global batch over its own step time;
the node's is the sum over its ranks. The time left is the step budget the
ranks announce (`steps_total` of their step events) less the node's slowest
rank's step, at the pace the watcher saw since that node's first step (or, with
a single step seen, that step's time). Everything here is pure: `now` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.core.events import Event

# What a rank does once its training is over: no time left to estimate.
DONE = frozenset({"training done", "finishing", "finished", "failed"})
# What a heartbeat's phase means to a person (cases/heartbeat.py writes the phases).
WAITING = {"first_batch": "waiting for the first batch", "eval": "evaluating"}


def duration_text(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def eta_s(step: int, steps_total: int | None, seconds_per_step: float | None) -> float | None:
    """Seconds left until the step budget is reached; None when the budget or the pace is unknown."""
    if steps_total is None or seconds_per_step is None or seconds_per_step <= 0:
        return None
    return max(0, steps_total - step) * seconds_per_step


def activity(event: Event) -> str | None:
    """What a rank is doing, as its latest event says, worded for a person; None for a step (the step
    line says it) and for events that say nothing new."""
    value, key = event.value, event.key
    if key == "heartbeat":
        phase = str(value.get("phase", ""))
        what = WAITING.get(phase, f"waiting ({phase})" if phase else "waiting")
        waited = value.get("waited_s")
        return f"{what} ({duration_text(float(waited))})" if isinstance(waited, (int, float)) and waited > 0 else what
    epoch = value.get("epoch")
    texts = {
        "process_start": "starting",
        "config": "starting",
        "world": "joined the process group",
        "flops": "counting the model's FLOPs",
        "train_start": "training started",
        "epoch_start": f"epoch {epoch} starting",
        "eval_start": f"evaluating epoch {epoch}",
        "eval_stop": f"evaluated epoch {epoch}" + (f": acc {value['acc']:.2f}%"
                                                    if isinstance(value.get("acc"), (int, float)) else ""),
        "epoch_stop": f"epoch {epoch} done",
        "train_stop": "training done",
        "summary": "finishing",
        "run_stop": "finished" if value.get("status") == "success" else "failed",
        "bandwidth": f"measuring {value.get('op', 'all-reduce')} at {value.get('size_bytes')} bytes",
    }
    return texts.get(key)


def event_text(event: Event) -> str:
    """Any event in words (a stalled rank's last event): `epoch 1 step 7`, `waiting for the first batch`."""
    value = event.value
    if event.key == "step":
        return (f"epoch {value['epoch']} " if "epoch" in value else "") + f"step {value.get('step')}"
    return activity(event) or event.key


@dataclass(frozen=True)
class RankStep:
    """One rank's latest step as its step event says."""

    rank: int
    epoch: int | None
    step: int
    steps_total: int | None
    step_s: float
    samples_per_s: float | None  # this rank's own: its share of the global batch over its step time


def rank_step(event: Event, world_size: int) -> RankStep | None:
    """The step a `step` event shows; None for any other event or one without a step number."""
    value = event.value
    step = value.get("step")
    if event.key != "step" or not isinstance(step, int):
        return None
    step_s = float(value.get("step_s") or 0.0)
    samples = float(value.get("samples") or 0.0) / max(1, world_size)
    epoch, total = value.get("epoch"), value.get("steps_total")
    return RankStep(rank=event.rank, epoch=epoch if isinstance(epoch, int) else None, step=step,
                    steps_total=total if isinstance(total, int) else None, step_s=step_s,
                    samples_per_s=samples / step_s if step_s > 0 else None)


@dataclass(frozen=True)
class NodeProgress:
    """What one node's line says."""

    node_rank: int
    host: str
    elapsed_s: float
    activity: str | None = None  # what its ranks do when that is not a step (the first that is not)
    epoch: int | None = None
    step: int | None = None  # its slowest rank's
    steps_total: int | None = None
    samples_per_s: float | None = None  # the sum over its ranks
    ranks: int = 0  # how many of its ranks have stepped
    slowest: RankStep | None = None  # named when the node has more than one rank
    left_s: float | None = None


def progress_line(node: NodeProgress) -> str:
    """One node's progress line."""
    parts: list[str] = []
    if node.step is not None:
        budget = f"/{node.steps_total}" if node.steps_total is not None else ""
        parts.append((f"epoch {node.epoch} " if node.epoch is not None else "") + f"step {node.step}{budget}")
    if node.activity is not None:
        parts.append(node.activity)
    elif node.step is None:
        parts.append("starting")
    if node.samples_per_s is not None:
        ranks = f" ({node.ranks} ranks)" if node.ranks > 1 else ""
        parts.append(f"{node.samples_per_s:,.1f} samples/s{ranks}")
    if node.slowest is not None and node.ranks > 1 and node.slowest.samples_per_s is not None:
        parts.append(f"slowest rank {node.slowest.rank} {node.slowest.samples_per_s:,.1f}/s")
    parts.append(f"{duration_text(node.elapsed_s)} elapsed")
    if node.left_s is not None:
        parts.append(f"~{duration_text(node.left_s)} left")
    return f"node {node.node_rank} ({node.host}): " + " · ".join(parts)


@dataclass
class _Pace:
    """A node's (slowest rank's) step when the watcher first saw one and when it last changed."""

    first_step: int
    first_at: float  # the controller's clock
    last_step: int
    last_at: float

    def seconds_per_step(self) -> float | None:
        steps = self.last_step - self.first_step
        return (self.last_at - self.first_at) / steps if steps > 0 else None


@dataclass
class ProgressBoard:
    """Every node's progress from the ranks' latest events; `hosts` by node rank."""

    hosts: dict[int, str]
    nproc_per_node: int
    world_size: int
    started: float  # when training was launched (the controller's clock)
    _steps: dict[int, RankStep] = field(default_factory=dict)  # global rank -> its last step
    _doing: dict[int, str] = field(default_factory=dict)  # global rank -> what it does when not stepping
    _pace: dict[int, _Pace] = field(default_factory=dict)  # node rank -> its first step seen
    seen: bool = False  # whether any rank has said anything yet

    def update(self, events: dict[int, Event], now: float) -> None:
        for rank, event in events.items():
            self.seen = True
            stepped = rank_step(event, self.world_size)
            if stepped is not None:
                self._steps[rank] = stepped
                self._doing.pop(rank, None)
            elif (doing := activity(event)) is not None:
                self._doing[rank] = doing
        for node_rank in self.hosts:
            steps = self._node_steps(node_rank)
            if not steps:
                continue
            lowest = min(s.step for s in steps)
            pace = self._pace.setdefault(node_rank, _Pace(lowest, now, lowest, now))
            if lowest != pace.last_step:
                pace.last_step, pace.last_at = lowest, now

    def _node_steps(self, node_rank: int) -> list[RankStep]:
        first = node_rank * self.nproc_per_node
        return [self._steps[r] for r in range(first, first + self.nproc_per_node) if r in self._steps]

    def node(self, node_rank: int, now: float) -> NodeProgress:
        first = node_rank * self.nproc_per_node
        doing = next((self._doing[r] for r in range(first, first + self.nproc_per_node) if r in self._doing), None)
        elapsed = now - self.started
        steps = self._node_steps(node_rank)
        if not steps:
            return NodeProgress(node_rank, self.hosts[node_rank], elapsed, activity=doing)
        slowest = min(steps, key=lambda s: (s.step, -s.step_s))
        rates = [s.samples_per_s for s in steps if s.samples_per_s is not None]
        pace = self._pace.get(node_rank)
        per_step = (pace.seconds_per_step() if pace is not None else None) or slowest.step_s or None
        return NodeProgress(node_rank, self.hosts[node_rank], elapsed, activity=doing, epoch=slowest.epoch,
                            step=slowest.step, steps_total=slowest.steps_total,
                            samples_per_s=sum(rates) if rates else None, ranks=len(steps),
                            slowest=min(steps, key=lambda s: s.samples_per_s or 0.0) if len(steps) > 1 else None,
                            left_s=None if doing in DONE else eta_s(slowest.step, slowest.steps_total, per_step))

    def lines(self, now: float) -> list[str]:
        return [progress_line(self.node(node_rank, now)) for node_rank in sorted(self.hosts)]
