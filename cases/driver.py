"""The training loop shared by every case, and its timing.

Per step (DESIGN.md's p_core)::

    fetch batch -> host-to-device copy -> [sync + barrier | t0]
        forward, backward, optimizer step
    [sync + barrier | t1]

``core_s = t1 - t0``; ``step_s`` runs from the previous step's t1 (or the
epoch's start) to this t1, so it includes data loading. Evaluation happens
between epochs, outside every step. Hence sum(core_s) <= training time
without evals <= train_stop - train_start, i.e. p_core >= p_train >= p_whole.

Heartbeats (cases/heartbeat.py) cover the wait for each epoch's first batch and
each evaluation's local pass, nothing else: not the fences' barriers, not the
evaluation's all-reduce, so a rank hung in a collective writes nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from cases import distributed
from cases.config import CaseConfig
from cases.data import Data
from cases.devices import DeviceSpec, PrecisionPlan
from cases.distributed import World
from cases.errors import TrainingDiverged
from cases.heartbeat import Heartbeat
from cases.protocol import percentile
from cases.recorder import Recorder
from cases.schedule import LrSchedule
from cases.steptimes import ComputeClock, split_step


@dataclass
class Trainer:
    cfg: CaseConfig
    model: nn.Module  # DDP-wrapped when distributed
    data: Data
    device: torch.device
    spec: DeviceSpec
    plan: PrecisionPlan
    world: World
    events: Recorder
    lr: float
    heartbeat: Optional[Heartbeat] = None  # None: one on `events`, at the default interval
    # Times each step's own forward + backward; DDP's hook marks it (cases/steptimes.py).
    clock: ComputeClock = field(default_factory=ComputeClock)


@dataclass
class Result:
    samples: int = 0
    steps: int = 0
    epochs: int = 0
    stop_reason: str = ""
    acc: Optional[float] = None
    core_s: List[float] = field(default_factory=list)
    step_s: List[float] = field(default_factory=list)


def make_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
              spec: DeviceSpec, plan: PrecisionPlan,
              after_backward: Optional[Callable[[], None]] = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """forward + backward + optimizer step, under the plan's autocast and scaler;
    `after_backward` is called between backward and the optimizer."""
    scaler = _grad_scaler(spec.device_type) if plan.grad_scaler else None

    def autocast() -> ContextManager[object]:
        if plan.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=spec.device_type, dtype=plan.autocast_dtype)

    def step(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss: torch.Tensor = criterion(model(images), targets)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
        if after_backward is not None:
            after_backward()
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        return loss

    return step


def _grad_scaler(device_type: str) -> torch.amp.GradScaler:
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        scaler: torch.amp.GradScaler = amp.GradScaler(device_type)
        return scaler
    return torch.cuda.amp.GradScaler()  # torch < 2.3, as in some vendor images


class CoreTimer:
    """Device sync + barrier on both sides of the timed region."""

    def __init__(self, spec: DeviceSpec, device: torch.device, world: World) -> None:
        self._sync = spec.synchronize
        self._device = device
        self._world = world

    def fence(self) -> float:
        self._sync(self._device)
        distributed.barrier(self._world)
        return time.perf_counter()


def evaluate(t: Trainer, module: nn.Module, heartbeat: Optional[Heartbeat] = None) -> Tuple[Optional[float], int]:
    """Top-1 percent over the whole val set, (correct, count) summed over ranks.
    The local pass heartbeats; the all-reduce that follows does not."""
    assert t.data.val is not None
    autocast = (torch.autocast(device_type=t.spec.device_type, dtype=t.plan.autocast_dtype)
                if t.plan.autocast_dtype is not None else contextlib.nullcontext())
    correct = torch.zeros(2, dtype=torch.int64, device=t.device)
    beating = heartbeat.waiting("eval") if heartbeat is not None else contextlib.nullcontext()
    module.eval()
    with beating, torch.no_grad(), autocast:
        for images, targets in t.data.val:
            images = _to_device(images, t)
            targets = targets.to(t.device, non_blocking=True)
            predicted = module(images).argmax(dim=1)
            correct[0] += (predicted == targets).sum()
            correct[1] += targets.numel()
    module.train()
    distributed.all_reduce_sum(t.world, correct)
    hits, count = (int(v) for v in correct.tolist())
    return (100.0 * hits / count if count else None), count


def _to_device(images: torch.Tensor, t: Trainer) -> torch.Tensor:
    fmt = torch.channels_last if t.cfg.channels_last else torch.contiguous_format
    return images.to(t.device, non_blocking=True, memory_format=fmt)


def _batches(loader: Iterable[Tuple[torch.Tensor, torch.Tensor]],
             heartbeat: Heartbeat) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches; heartbeats while the first one is awaited (workers
    starting, a cold file system), not after."""
    with heartbeat.waiting("first_batch"):
        batches = iter(loader)
        first = next(batches, None)
    if first is None:
        return iter(())
    return itertools.chain([first], batches)


def check_loss(value: float, step: int) -> None:
    """A NaN or infinite loss ends the run: every later step would train on garbage.
    The step's event is written first, so the log shows the value too."""
    if math.isnan(value):
        raise TrainingDiverged(f"loss is NaN at step {step}")
    if math.isinf(value):
        raise TrainingDiverged(f"loss is {'inf' if value > 0 else '-inf'} at step {step}")


def _limit_reached(cfg: CaseConfig, result: Result) -> str:
    if cfg.max_steps is not None and result.steps >= cfg.max_steps:
        return "max_steps"
    if cfg.max_samples is not None and result.samples >= cfg.max_samples:
        return "max_samples"
    return ""


def step_budget(cfg: CaseConfig, steps_per_epoch: int, global_batch: int) -> int:
    """The steps the run will take at most: its epochs, max_steps and max_samples (target_acc may end it sooner)."""
    budget = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        budget = min(budget, cfg.max_steps)
    if cfg.max_samples is not None:
        budget = min(budget, -(-cfg.max_samples // global_batch))
    return budget


def train(t: Trainer) -> Result:
    cfg, world, events = t.cfg, t.world, t.events
    module = getattr(t.model, "module", t.model)  # unwrapped, for evaluation
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.SGD(t.model.parameters(), lr=t.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    global_batch = cfg.batch_size * world.world_size
    schedule = LrSchedule.from_config(cfg, t.lr, t.data.steps_per_epoch, global_batch)
    steps_total = step_budget(cfg, t.data.steps_per_epoch, global_batch)  # for the controller's time left
    step_fn = make_step(t.model, criterion, optimizer, t.spec, t.plan, after_backward=t.clock.backward_done)
    timer = CoreTimer(t.spec, t.device, world)
    heartbeat = t.heartbeat or Heartbeat(events)
    result = Result()
    t.model.train()

    distributed.barrier(world)
    events.emit("train_start", {})
    for epoch in range(1, cfg.epochs + 1):
        result.epochs = epoch
        events.emit("epoch_start", {"epoch": epoch})
        t.data.sampler.set_epoch(epoch)
        epoch_steps = 0
        mark = time.perf_counter()
        for images, targets in _batches(t.data.train, heartbeat):
            if world.rank == cfg.fail_rank and result.steps + 1 == cfg.fail_step:
                raise RuntimeError(f"injected failure at step {cfg.fail_step} on rank {world.rank}")
            lr = schedule.at(result.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = _to_device(images, t)
            targets = targets.to(t.device, non_blocking=True)
            loaded = time.perf_counter()

            start = timer.fence()
            t.clock.begin()
            loss = step_fn(images, targets)
            stop = timer.fence()

            result.steps += 1
            result.samples += global_batch
            epoch_steps += 1
            result.core_s.append(stop - start)
            result.step_s.append(stop - mark)
            # Read after the stop fence synchronized the device: no sync of its own.
            loss_value = float(loss.item())
            # Every rank logs its steps (the stall watchdog watches each rank, and a
            # hung rank's last step shows where it stopped); only rank 0 echoes them.
            events.step(result.steps, {
                "epoch": epoch, "step": result.steps, "steps_total": steps_total, "samples": global_batch,
                "step_s": stop - mark, "core_s": stop - start, "lr": lr, "loss": loss_value,
                **split_step(stop - mark, loaded - mark, t.clock.seconds()),
            })
            check_loss(loss_value, result.steps)
            mark = stop
            result.stop_reason = _limit_reached(cfg, result)
            if result.stop_reason:
                break

        if epoch_steps == t.data.steps_per_epoch and t.data.val is not None:
            events.emit("eval_start", {"epoch": epoch})
            acc, count = evaluate(t, module, heartbeat)
            result.acc = acc
            events.emit("eval_stop", {"epoch": epoch, "acc": acc, "samples": count})
            if cfg.target_acc is not None and acc is not None and acc >= cfg.target_acc:
                result.stop_reason = result.stop_reason or "target_acc"
        events.emit("epoch_stop", {"epoch": epoch, "steps": epoch_steps})
        if result.stop_reason:
            break
    else:
        result.stop_reason = "max_epochs"

    distributed.barrier(world)
    events.emit("train_stop", {"samples": result.samples, "steps": result.steps,
                               "epochs": result.epochs, "stop_reason": result.stop_reason})
    return result


def summarize(t: Trainer, result: Result) -> Dict[str, Any]:
    memory = t.spec.memory(t.device)
    return {
        "core_s": sum(result.core_s),
        "step_s_p50": percentile(result.step_s, 50),
        "step_s_p90": percentile(result.step_s, 90),
        "step_s_max": max(result.step_s) if result.step_s else None,
        "peak_mem_gib": memory.peak_gib,
        "mem_total_gib": memory.total_gib,
        "mem_source": memory.source,
        "steps": result.steps,
        "samples": result.samples,
        "acc": result.acc,
    }
