"""A diverging run stops at the first NaN/inf loss, as a failure of the job (exit 1,
no traceback), naming the step; the seed given on the command line is the run's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from casekit import read_events

from cases.driver import check_loss
from cases.errors import TrainingDiverged

# Measured on the cpu synthetic data (mobilenetv2, 32 px, bs 4, 2 ranks): the loss goes
# 2.44 -> 2.7e11 -> NaN on one machine, so the run stops at step 3; another CPU's kernels
# round differently and reach NaN at step 4. The test reads the step from the log.
DIVERGING = "lr=1e9,synthetic_samples=64,image_size=32,bs=4"


def diverged(losses: list[float]) -> str:
    """The error a run whose step losses are these must stop with: every loss but the
    last finite, the last not."""
    assert losses and all(math.isfinite(loss) for loss in losses[:-1]), losses
    last = losses[-1]
    assert not math.isfinite(last), losses
    word = "NaN" if math.isnan(last) else "inf" if last > 0 else "-inf"
    return f"loss is {word} at step {len(losses)}"


def test_nan_loss_stops_the_run_as_a_failure_naming_the_step(torchrun, tmp_path: Path) -> None:
    done = torchrun("mobilenetv2", fix_hp=DIVERGING)
    assert done.returncode != 0
    errors = set()
    for rank in (0, 1):
        events = read_events(tmp_path / "logs" / f"events_rank{rank}.log")
        stop = events.one("run_stop")["value"]
        steps = events.all("step")
        assert [s["value"]["step"] for s in steps] == list(range(1, len(steps) + 1))
        error = diverged([s["value"]["loss"] for s in steps])  # nothing trained after it
        assert stop == {"status": "failed", "error": error} and not events.all("train_stop")
        assert len(steps) <= 8, "it ran to the end of the data (8 steps an epoch) instead of diverging"
        errors.add(error)
    assert len(errors) == 1, errors  # the ranks average one loss
    assert f"error: {errors.pop()}" in done.stderr
    assert "in check_loss" not in done.stdout + done.stderr  # the ranks print no traceback (torchrun does)


def test_check_loss_names_nan_and_both_infinities() -> None:
    check_loss(2.5, 1)
    for value, text in ((float("nan"), "loss is NaN at step 7"), (float("inf"), "loss is inf at step 7"),
                        (float("-inf"), "loss is -inf at step 7")):
        with pytest.raises(TrainingDiverged, match=f"^{text}$"):
            check_loss(value, 7)


def test_seed_on_the_command_line_is_the_runs_and_recorded(standalone, tmp_path: Path) -> None:
    done = standalone("--case", "mobilenetv2", "--vendor", "cpu", "--config", "cpux1x1", "--seed", "1234",
                      "--fix-hp", "max_steps=1,synthetic_samples=8,image_size=32,bs=4",
                      "--log-dir", str(tmp_path / "logs"))
    assert done.returncode == 0, done.stderr
    config = read_events(tmp_path / "logs" / "events_rank0.log").one("config")["value"]
    assert config["seed"] == 1234 and config["seed_from"] == "--seed"
    assert "seed" not in config["fix_hp"]  # not a hyper-parameter: history keeps comparing the runs
