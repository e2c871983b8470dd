"""Did the loss fall? A run on real data whose loss ends where it began trained
nothing (a wrong label mapping, a learning rate of zero, frozen weights), however
fast it ran: a warning in the results, never a failure.

Per step the loss is the mean over the ranks that logged it (each rank logs its
own batch's loss; the mean is the global batch's). A single step's loss is noisy,
so the first and the last `window` steps are averaged, and the fall between the
two means must exceed their noise: NOISE_SIGMAS standard errors of the
difference (each window's sample standard deviation / sqrt(window)), and at
least MIN_FALL of the first mean. Runs shorter than MIN_STEPS logged steps and
synthetic runs (random labels: nothing to learn) are not judged.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from harness.core.events import Event, last

MIN_STEPS = 20
WINDOW_SHARE = 0.1  # each window: this share of the logged steps ...
MIN_WINDOW = 5  # ... but at least this many
NOISE_SIGMAS = 2.0
MIN_FALL = 0.01  # of the first window's mean


@dataclass(frozen=True)
class LossTrend:
    steps: int  # steps with a finite loss
    window: int
    first: float  # mean of the first `window` steps
    last: float  # mean of the last `window` steps
    noise: float  # the fall the noise alone could make

    @property
    def fell(self) -> bool:
        return self.first - self.last > self.noise

    def warning(self) -> str:
        return (f"loss did not fall: mean of the first {self.window} steps {self.first:.4g}, of the last "
                f"{self.window} {self.last:.4g} over {self.steps} steps (a fall must exceed {self.noise:.3g}: "
                f"{NOISE_SIGMAS:g} standard errors of the step-to-step noise, at least {MIN_FALL:.0%})")


def step_losses(by_rank: dict[int, list[Event]]) -> list[float]:
    """The loss per step in step order, averaged over the ranks that logged it."""
    per_step: dict[int, list[float]] = {}
    for events in by_rank.values():
        for event in events:
            if event.key != "step":
                continue
            step, loss = event.value.get("step"), event.value.get("loss")
            if isinstance(step, int) and isinstance(loss, (int, float)) and math.isfinite(loss):
                per_step.setdefault(step, []).append(float(loss))
    return [statistics.fmean(per_step[step]) for step in sorted(per_step)]


def loss_trend(losses: list[float]) -> LossTrend | None:
    """The first and last windows' means and the noise between them; None below MIN_STEPS."""
    if len(losses) < MIN_STEPS:
        return None
    window = max(MIN_WINDOW, int(len(losses) * WINDOW_SHARE))
    head, tail = losses[:window], losses[-window:]
    first, final = statistics.fmean(head), statistics.fmean(tail)
    error = math.sqrt((statistics.variance(head) + statistics.variance(tail)) / window)
    return LossTrend(steps=len(losses), window=window, first=first, last=final,
                     noise=max(NOISE_SIGMAS * error, MIN_FALL * abs(first)))


def loss_warning(by_rank: dict[int, list[Event]]) -> str | None:
    """The warning for a real-data run whose loss did not fall beyond its noise; None otherwise."""
    config = last(by_rank.get(0, []), "config")
    if config is None or config.value.get("synthetic", True):
        return None
    trend = loss_trend(step_losses(by_rank))
    return trend.warning() if trend is not None and not trend.fell else None
