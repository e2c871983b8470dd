"""Overhead of the driver's instrumentation on p_core, on cpu.

Two comparisons against a bare loop doing the same forward, backward and
optimizer steps with no events, no per-step fences (sync + barrier) and no
bookkeeping; same model, same batch shape, same number of steps, warm-up
excluded:

1. end to end: the real driver (``cases.run.main``, synthetic data, one
   process), p_core read back from its event log, against a bare loop in the
   same process; the two alternate for a few repeats.
2. interleaved: one model, one stream of batches; even steps go through the
   driver's own timed step (``CoreTimer`` fences around ``make_step``, the
   per-part compute clock of cases/steptimes.py, then the loss read-back and the
   step event written to a log file), odd steps run bare
   on the same batch. Alternating step by step cancels the drift of a shared
   machine's load, which the end-to-end figure cannot.

    python bench/instrumentation.py [--case mobilenetv2] [--steps 40] [--repeats 3]

On cpu every op is synchronous, so the bare loop's clock reads (one on each
side of a step, outside the batch creation) time it exactly without a sync.
Target (issue 17's instrumentation budget): overhead at most 1 % of p_core. A
single process has no DDP communication hook; in a distributed run that hook
adds one Python call and one clock mark per gradient bucket (a few per step).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cases import run  # noqa: E402
from cases.case import load_case  # noqa: E402
from cases.config import CaseConfig, load_config  # noqa: E402
from cases.data import SyntheticImages  # noqa: E402
from cases.devices import get_device_spec  # noqa: E402
from cases.distributed import World  # noqa: E402
from cases.driver import CoreTimer, make_step  # noqa: E402
from cases.protocol import PREFIX  # noqa: E402
from cases.recorder import Recorder  # noqa: E402
from cases.steptimes import ComputeClock, split_step  # noqa: E402

CONFIG = "benchx1x1"  # no hardware file: the case's defaults plus the overrides below


@dataclass(frozen=True)
class Setup:
    case: str
    batch_size: int
    image_size: int
    steps: int
    warmup: int

    @property
    def fix_hp(self) -> str:
        return (f"bs={self.batch_size},image_size={self.image_size},val_resize={self.image_size},"
                f"synthetic_samples={self.batch_size * (self.warmup + self.steps)},epochs=1,eval=false,"
                f"num_workers=0,log_every=1000000")

    def config(self) -> CaseConfig:
        return load_config(self.case, load_case(self.case).config, "cpu", CONFIG, self.fix_hp).values


@dataclass(frozen=True)
class Rates:
    total: float  # samples / summed step time: p_core's definition
    median: float  # samples / median step time: robust to bursts of other load

    @classmethod
    def of(cls, batch: int, times: List[float]) -> Rates:
        return cls(batch * len(times) / sum(times), batch / statistics.median(times))


def _model(setup: Setup) -> Tuple[CaseConfig, nn.Module, torch.optim.Optimizer, nn.Module]:
    cfg = setup.config()
    torch.manual_seed(cfg.seed)
    model = load_case(setup.case).build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.effective_lr(1), momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    return cfg, model, optimizer, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def _bare_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
               images: torch.Tensor, targets: torch.Tensor) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    criterion(model(images), targets).backward()
    optimizer.step()
    return time.perf_counter() - start


def driver_run(setup: Setup) -> Rates:
    """p_core as the driver measures and records it in a real run (after warm-up)."""
    with tempfile.TemporaryDirectory() as log_dir:
        argv = ["--case", setup.case, "--vendor", "cpu", "--config", CONFIG,
                "--log-dir", log_dir, "--fix-hp", setup.fix_hp]
        with contextlib.redirect_stdout(io.StringIO()):
            status = run.main(argv)
        if status != 0:
            raise SystemExit(f"driver run failed with status {status}")
        lines = (Path(log_dir) / "events_rank0.log").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line[len(PREFIX):]) for line in lines]
    core = [r["value"]["core_s"] for r in records if r["key"] == "step"][setup.warmup:]
    assert len(core) == setup.steps, len(core)
    return Rates.of(setup.batch_size, core)


def bare_run(setup: Setup) -> Rates:
    """The same steps with nothing around them; a fresh batch before each step,
    as the driver's synthetic data gives, made outside the clock reads."""
    cfg, model, optimizer, criterion = _model(setup)
    data = SyntheticImages(setup.batch_size * (setup.warmup + setup.steps), cfg.image_size,
                           cfg.num_classes, cfg.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size)
    times = [_bare_step(model, optimizer, criterion, images, targets) for images, targets in loader]
    return Rates.of(setup.batch_size, times[setup.warmup:])


def interleaved(setup: Setup) -> Tuple[Rates, Rates]:
    """(driver, bare) step rates, alternating step by step on one model and batch."""
    cfg, model, optimizer, criterion = _model(setup)
    spec = get_device_spec("cpu")
    device = spec.make_device(0)
    clock = ComputeClock(spec.timing_event)
    step_fn = make_step(model, criterion, optimizer, spec, spec.precision(cfg.precision, device),
                        after_backward=clock.backward_done)
    timer = CoreTimer(spec, device, World(rank=0, world_size=1, local_rank=0, node_rank=0, distributed=False))
    data = SyntheticImages(setup.batch_size * (setup.warmup + setup.steps), cfg.image_size,
                           cfg.num_classes, cfg.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size)
    driver: List[float] = []
    bare: List[float] = []
    with tempfile.TemporaryDirectory() as log_dir:
        events = Recorder(Path(log_dir), rank=0, echo=False)
        for number, (images, targets) in enumerate(loader, 1):
            loaded = time.perf_counter()
            start = timer.fence()
            clock.begin()
            loss = step_fn(images, targets)
            stop = timer.fence()
            events.step(number, {"epoch": 1, "step": number, "samples": setup.batch_size, "step_s": stop - start,
                                 "core_s": stop - start, "lr": 0.0, "loss": float(loss.item()),
                                 **split_step(stop - loaded, 0.0, clock.seconds())})
            driver.append(stop - start)
            bare.append(_bare_step(model, optimizer, criterion, images, targets))
        events.close()
    return Rates.of(setup.batch_size, driver[setup.warmup:]), Rates.of(setup.batch_size, bare[setup.warmup:])


def _overhead(driver: float, bare: float) -> float:
    return (bare - driver) / bare * 100


def _report(label: str, driver: List[Rates], bare: List[Rates]) -> None:
    pick: List[Tuple[str, Callable[[Rates], float]]] = [("p_core", lambda r: r.total),
                                                        ("median step", lambda r: r.median)]
    for name, value in pick:
        d = statistics.median(value(r) for r in driver)
        b = statistics.median(value(r) for r in bare)
        print(f"{label:12s} {name:12s} driver {d:8.2f}/s  bare {b:8.2f}/s  overhead {_overhead(d, b):+6.2f} %")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="mobilenetv2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: less exposed to other load)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = Setup(args.case, args.batch_size, args.image_size, args.steps, args.warmup)
    print(f"{setup.case} on cpu, batch {setup.batch_size} x {setup.image_size}px, {setup.steps} timed steps "
          f"after {setup.warmup} warm-up, {args.repeats} repeats, {torch.get_num_threads()} threads", flush=True)

    e2e_driver: List[Rates] = []
    e2e_bare: List[Rates] = []
    mixed_driver: List[Rates] = []
    mixed_bare: List[Rates] = []
    for repeat in range(1, args.repeats + 1):
        runs = [lambda: e2e_driver.append(driver_run(setup)), lambda: e2e_bare.append(bare_run(setup))]
        for do in runs if repeat % 2 else reversed(runs):  # alternate which goes first
            do()
        d, b = interleaved(setup)
        mixed_driver.append(d)
        mixed_bare.append(b)
        print(f"repeat {repeat}: p_core end-to-end driver {e2e_driver[-1].total:.2f}/s bare {e2e_bare[-1].total:.2f}/s;"
              f" interleaved driver {d.total:.2f}/s bare {b.total:.2f}/s", flush=True)
    print("medians over the repeats:")
    _report("end-to-end", e2e_driver, e2e_bare)
    _report("interleaved", mixed_driver, mixed_bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
