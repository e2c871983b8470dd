"""Controller overhead of the 2-host end-to-end run (2 nodes x 2 processes).

Prints the wall time of `python -m harness bench` minus the training processes'
own e2e_time, split by phase (preflight, environment, image, launch, wait-detect,
collect, parse), and the container + torch start-up inside wait (bench/startup.py).
Target: at most 5 s with a cached image. Needs the test hosts:

    bash tests/infra/setup.sh && .venv/bin/python bench/overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from conftest import local_infra, write_hosts_yaml  # noqa: E402
from startup import container_startup_s  # noqa: E402

TINY = "bs=2,image_size=32,max_steps=4,num_classes=10"
TARGET_S = 5.0
PHASES = ("preflight", "environment", "image", "launch", "wait-detect", "collect", "parse")


def one_run(hosts: Path, results: Path, run_id: str) -> dict[str, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--case", "resnet50", "--vendor", "cpu", "--config", "2x2",
         "--hosts", str(hosts), "--results", str(results), "--run-id", run_id, "--fix-hp", TINY],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"run {run_id} failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads((results / run_id / "resnet50" / "2x2" / "results.json").read_text())
    phases = dict(result["phase_seconds"])
    e2e = float(result["metrics"]["e2e_time"])
    # Time inside `wait` that is not training: container start, torchrun, detection latency.
    phases["wait-detect"] = phases.pop("wait") - e2e
    phases["cli+other"] = wall - e2e - sum(phases.values())
    phases["total"] = wall - e2e
    phases["startup"] = container_startup_s(results / run_id / "resnet50" / "2x2") or 0.0
    phases["beyond-startup"] = phases["total"] - phases["startup"]
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    infra = local_infra()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        folder = Path(tmp)
        hosts = write_hosts_yaml(folder, infra)
        one_run(hosts, folder / "results", "overhead-warmup")  # builds the image if needed
        runs = [one_run(hosts, folder / "results", f"overhead-{i}") for i in range(args.repeats)]
    print(f"controller overhead, 2 hosts x 2 processes, cached image, median of {args.repeats} runs:")
    for name in (*PHASES, "cli+other", "total", "startup", "beyond-startup"):
        values = [run[name] for run in runs]
        print(f"  {name:<12} {statistics.median(values):6.2f} s   (min {min(values):.2f}, max {max(values):.2f})")
    total = statistics.median(run["total"] for run in runs)
    print(f"overhead {total:.2f} s: {'within' if total <= TARGET_S else 'OVER'} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
