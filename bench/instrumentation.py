"""Overhead of the driver's instrumentation on p_core.

Runs the real driver (``cases.run.main``, synthetic data, one process) and reads
p_core back from its event log, then a bare loop doing the same forward,
backward and optimizer steps on the same model and batch shape with no events,
no timers per step and no syncs. Warm-up steps are excluded from both; the two
alternate for a few repeats and the medians are compared.

    python bench/instrumentation.py [--case mobilenetv2] [--steps 40] [--repeats 5]

Prints p_core of each and the overhead in percent (target: under 2 %).
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
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from cases import run  # noqa: E402
from cases.case import load_case  # noqa: E402
from cases.config import load_config  # noqa: E402
from cases.events import PREFIX  # noqa: E402


@dataclass(frozen=True)
class Rates:
    total: float  # samples / summed step time: p_core's definition
    median: float  # samples / median step time: robust to bursts of other load
    best: float  # samples / fastest step: what is left when other load is absent

    @classmethod
    def of(cls, batch: int, times: List[float]) -> "Rates":
        return cls(batch * len(times) / sum(times), batch / statistics.median(times), batch / min(times))


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


def driver_p_core(setup: Setup) -> Rates:
    """Samples per second of pure compute as the driver measures it (after warm-up)."""
    with tempfile.TemporaryDirectory() as log_dir:
        argv = ["--case", setup.case, "--vendor", "cpu", "--config", "benchx1x1",
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


def bare_p_core(setup: Setup) -> Rates:
    """The same steps with nothing around them. On cpu every op is synchronous, so
    a clock read on each side of a step times it exactly without any sync; the
    batch is made fresh before each step (as the driver's synthetic data is) and
    outside the clock reads."""
    spec = load_case(setup.case)
    cfg = load_config(setup.case, spec.config, "cpu", "benchx1x1", setup.fix_hp).values
    torch.manual_seed(cfg.seed)
    model = spec.build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.effective_lr(1), momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    shape = (cfg.batch_size, 3, cfg.image_size, cfg.image_size)
    times: List[float] = []
    for index in range(setup.warmup + setup.steps):
        images, targets = torch.randn(shape), torch.randint(cfg.num_classes, (cfg.batch_size,))
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), targets).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return Rates.of(setup.batch_size, times[setup.warmup:])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="mobilenetv2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: less exposed to other load)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = Setup(args.case, args.batch_size, args.image_size, args.steps, args.warmup)

    driver: List[Rates] = []
    bare: List[Rates] = []
    for repeat in range(1, args.repeats + 1):
        # alternate the order so that drift in the machine's load hits both alike
        if repeat % 2:
            driver.append(driver_p_core(setup))
            bare.append(bare_p_core(setup))
        else:
            bare.append(bare_p_core(setup))
            driver.append(driver_p_core(setup))
        print(f"repeat {repeat}: p_core driver {driver[-1].total:.2f}/s, bare loop {bare[-1].total:.2f}/s", flush=True)

    def overhead(d: float, b: float) -> float:
        return (b - d) / b * 100

    print(f"{setup.case} on cpu, batch {setup.batch_size} x {setup.image_size}px, {setup.steps} timed steps "
          f"after {setup.warmup} warm-up, {args.repeats} repeats, {torch.get_num_threads()} threads")
    for label, pick in (("p_core, median of repeats", lambda r: r.total),
                        ("median step, median of repeats", lambda r: r.median),
                        ("fastest step, best of repeats", lambda r: r.best)):
        combine = max if label.endswith("best of repeats") else statistics.median
        d, b = combine(pick(r) for r in driver), combine(pick(r) for r in bare)
        print(f"{label:32s} driver {d:8.2f}/s  bare {b:8.2f}/s  overhead {overhead(d, b):+6.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
