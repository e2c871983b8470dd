"""The loss-did-not-fall warning: real data only, at least MIN_STEPS steps, the
means of the first and last windows compared against the step-to-step noise."""

from __future__ import annotations

import math
import random

from harness.core.events import Event
from harness.core.loss_trend import MIN_STEPS, loss_trend, loss_warning, step_losses


def events(losses_by_rank: dict[int, list[float]], synthetic: bool = False) -> dict[int, list[Event]]:
    by_rank: dict[int, list[Event]] = {}
    for rank, losses in losses_by_rank.items():
        by_rank[rank] = [Event(0, "config", rank, {"synthetic": synthetic})] + [
            Event(step, "step", rank, {"step": step, "loss": loss}) for step, loss in enumerate(losses, start=1)]
    return by_rank


def noisy(start: float, stop: float, steps: int, noise: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [start + (stop - start) * i / (steps - 1) + rng.gauss(0, noise) for i in range(steps)]


def test_a_falling_loss_gives_no_warning_a_flat_one_does() -> None:
    falling = events({0: noisy(2.3, 1.2, 100, 0.15, 1), 1: noisy(2.3, 1.2, 100, 0.15, 2)})
    assert loss_warning(falling) is None
    flat = events({0: noisy(2.3, 2.3, 100, 0.15, 3), 1: noisy(2.3, 2.3, 100, 0.15, 4)})
    warning = loss_warning(flat)
    assert warning is not None and warning.startswith("loss did not fall: mean of the first 10 steps 2.")
    assert "of the last 10 2." in warning and "over 100 steps" in warning


def test_a_fall_inside_the_noise_is_not_a_fall() -> None:
    # 2.30 -> 2.25 with a step-to-step noise of 0.3: two standard errors are about 0.27
    assert loss_warning(events({0: noisy(2.30, 2.25, 100, 0.3, 5)})) is not None


def test_synthetic_short_and_unknown_runs_are_not_judged() -> None:
    flat = [2.3] * 100
    assert loss_warning(events({0: flat}, synthetic=True)) is None
    assert loss_warning(events({0: [2.3] * (MIN_STEPS - 1)})) is None
    assert loss_warning({0: [Event(1, "step", 0, {"step": 1, "loss": 2.0})]}) is None  # no config event


def test_losses_are_averaged_over_ranks_per_step_and_non_finite_ones_skipped() -> None:
    by_rank = events({0: [1.0, 3.0, math.nan], 1: [3.0, 5.0, 2.0]})
    assert step_losses(by_rank) == [2.0, 4.0, 2.0]
    trend = loss_trend([2.0] * MIN_STEPS)
    assert trend is not None and not trend.fell and math.isclose(trend.noise, 0.02)  # the 1% floor
