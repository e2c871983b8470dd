"""Learning rate as a function of the step: linear warm-up, then constant,
step, multistep or cosine decay. Epoch positions are fractional
(step / steps_per_epoch), so milestones may fall inside an epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

from cases.config import CaseConfig


@dataclass(frozen=True)
class LrSchedule:
    peak: float
    kind: str
    steps_per_epoch: int
    warmup_epochs: float
    step_epochs: float
    gamma: float
    milestones: Tuple[float, ...]
    total_epochs: float  # where cosine reaches zero

    @classmethod
    def from_config(cls, cfg: CaseConfig, peak: float, steps_per_epoch: int,
                    global_batch: int) -> LrSchedule:
        total_steps: float = cfg.epochs * steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        if cfg.max_samples is not None:
            total_steps = min(total_steps, math.ceil(cfg.max_samples / global_batch))
        return cls(peak=peak, kind=cfg.lr_schedule, steps_per_epoch=steps_per_epoch,
                   warmup_epochs=cfg.warmup_epochs, step_epochs=cfg.lr_step_epochs,
                   gamma=cfg.lr_gamma, milestones=tuple(sorted(cfg.lr_milestones)),
                   total_epochs=total_steps / steps_per_epoch)

    def at(self, step: int) -> float:
        """Learning rate for the update with 0-based global index ``step``."""
        epoch = step / self.steps_per_epoch
        warm = 1.0
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            warm = min(1.0, (step + 1) / (self.warmup_epochs * self.steps_per_epoch))
        return self.peak * warm * self._decay(epoch)

    def _decay(self, epoch: float) -> float:
        if self.kind == "step":
            return self.gamma ** math.floor(epoch / self.step_epochs + 1e-9)
        if self.kind == "multistep":
            return self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        if self.kind == "cosine":
            span = self.total_epochs - self.warmup_epochs
            progress = 0.0 if span <= 0 else min(1.0, max(0.0, (epoch - self.warmup_epochs) / span))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0
