"""Helpers for the training-side tests: reading event logs back, the metrics
the harness computes from them, launching cases.run, a learnable JPEG data set."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cases.protocol import PREFIX  # noqa: E402

# 4 classes of noisy solid colours: learnable in one epoch, not by chance.
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40)]


@dataclass
class Events:
    records: List[Dict[str, Any]]

    def keys(self) -> List[str]:
        return [r["key"] for r in self.records]

    def all(self, key: str) -> List[Dict[str, Any]]:
        return [r for r in self.records if r["key"] == key]

    def one(self, key: str) -> Dict[str, Any]:
        found = self.all(key)
        assert len(found) == 1, f"{key}: {len(found)} events"
        return found[0]

def read_events(path: Path) -> Events:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        assert line.startswith(PREFIX), line
        records.append(json.loads(line[len(PREFIX):]))
    return Events(records)

@dataclass
class Metrics:
    samples: int
    e2e_s: float
    p_whole: float
    p_train: float
    p_core: float

def metrics(rank0: Events) -> Metrics:
    """The vendor-page metrics, computed from rank 0's events as the harness does."""
    start, stop = rank0.one("train_start")["time_ms"], rank0.one("train_stop")["time_ms"]
    evals_ms = sum(b["time_ms"] - a["time_ms"] for a, b in zip(rank0.all("eval_start"), rank0.all("eval_stop")))
    samples = rank0.one("train_stop")["value"]["samples"]
    core_s = sum(r["value"]["core_s"] for r in rank0.all("step"))
    return Metrics(
        samples=samples,
        e2e_s=(rank0.one("run_stop")["time_ms"] - rank0.one("process_start")["time_ms"]) / 1000,
        p_whole=samples / ((stop - start) / 1000),
        p_train=samples / ((stop - start - evals_ms) / 1000),
        p_core=samples / core_s,
    )

def env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(name, None)
    return env

def run_case_args(case: str, log_dir: Path, fix_hp: str = "", data: Optional[Path] = None,
                  vendor: str = "cpu", config: str = "cpux1x2") -> List[str]:
    args = ["-m", "cases.run", "--case", case, "--vendor", vendor, "--config", config,
            "--log-dir", str(log_dir)]
    if fix_hp:
        args += ["--fix-hp", fix_hp]
    if data is not None:
        args += ["--data", str(data)]
    return args

def make_jpeg_dataset(root: Path, per_class_train: int = 40, per_class_val: int = 10,
                      size: int = 32, seed: int = 0) -> Path:
    """ImageNet layout, wnid-like folder names; val has one extra image in the
    first class so the val set (41) does not split evenly over 2 ranks."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for index, colour in enumerate(COLOURS):
            folder = root / split / f"n{index + 1:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            extra = 1 if split == "val" and index == 0 else 0
            for number in range(count + extra):
                pixels = np.asarray(colour) + rng.normal(0, 40, (size, size, 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                image.save(folder / f"{split}_{index}_{number:04d}.JPEG", quality=90)
    return root
