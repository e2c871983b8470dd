"""Controller overhead per job of a campaign against separate `bench` runs.

A 4-job campaign on the two test hosts (resnet50, cpu, 2x1, tiny) beside 4
separate `python -m harness bench` runs of the same jobs. A bench run's overhead
is its wall time minus its e2e_time. A campaign job's is the time between two
trainings, by rank 0's own millisecond timestamps: from the previous job's
run_stop (the first: the campaign's start) to its process_start, which holds the
previous job's collect, the gates, this job's preflight, launch and start-up; the
campaign's end (the last collect, summary, plots) is given once. Each with and
without the container + torch start-up (bench/startup.py). Target: after the
first job, at most 3 s per job beyond that start-up. Needs the test hosts:

    bash tests/infra/setup.sh && flock /tmp/bench-e2e.lock .venv/bin/python bench/campaign_overhead.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from conftest import local_infra, write_hosts_yaml  # noqa: E402
from startup import container_startup_s  # noqa: E402

TINY = "bs=2,image_size=32,num_classes=10,max_steps=2"
TARGET_S = 3.0


def e2e_of(results_json: Path) -> float:
    return float(json.loads(results_json.read_text())["metrics"]["e2e_time"])


def startup_of(results_json: Path) -> float:
    return container_startup_s(results_json.parent) or 0.0


def separate_runs(hosts: Path, results: Path, jobs: int) -> list[tuple[float, float]]:
    """(overhead, start-up) of each `bench` run, in seconds."""
    overheads = []
    for index in range(jobs):
        run_id = f"separate-{index}"
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "harness", "bench", "--case", "resnet50", "--vendor", "cpu",
                               "--config", "2x1", "--fix-hp", TINY, "--hosts", str(hosts), "--results", str(results),
                               "--run-id", run_id], cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench {run_id} failed:\n{proc.stderr}")
        results_json = results / run_id / "resnet50" / "2x1" / "results.json"
        overheads.append((wall - e2e_of(results_json), startup_of(results_json)))
    return overheads


def rank0_span(results_json: Path) -> tuple[float, float]:
    """(process_start, run_stop) of rank 0, Unix seconds from its events (milliseconds)."""
    node0 = next(iter(sorted(results_json.parent.glob("*_noderank0"))))
    times: dict[str, float] = {}
    for line in (node0 / "container" / "events_rank0.log").read_text().splitlines():
        if ":::BENCH" in line:
            event = json.loads(line.split(":::BENCH", 1)[1])
            if event["key"] in ("process_start", "run_stop"):
                times.setdefault(event["key"], event["time_ms"] / 1000.0)
    return times["process_start"], times["run_stop"]


def campaign(hosts: Path, folder: Path, jobs: int) -> tuple[list[tuple[float, float]], float]:
    """Overhead of each campaign job: the time from the previous job's rank 0 ending
    (run_stop; for the first, the campaign's start) to this one's rank 0 starting
    (process_start), all of it between the two trainings: collect, gates, preflight,
    launch, start-up. And the campaign's end, once per campaign: from the last job's
    run_stop to the exit (collect, summary, plots, the lock)."""
    suite = folder / "overhead.yaml"
    suite.write_text(yaml.safe_dump({"name": "overhead", "hosts": str(hosts), "defaults": {"vendor": "cpu"},
                                     "jobs": [{"case": "resnet50", "config": "2x1", "fix_hp": TINY}] * jobs}))
    results = folder / "campaign-results"
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "harness", "campaign", "run", str(suite), "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True, check=False)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"campaign failed:\n{proc.stderr}")
    state = json.loads(next((results / "campaigns" / "overhead").glob("*/state.json")).read_text())
    runs = [Path(unit["attempts"][-1]["results_json"]) for unit in state["units"]]
    spans = [rank0_span(run) for run in runs]
    previous_ends = [start, *(stop for _, stop in spans[:-1])]
    return [(began - previous, startup_of(run))
            for previous, (began, _), run in zip(previous_ends, spans, runs)], end - spans[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    infra = local_infra()
    with tempfile.TemporaryDirectory(prefix="bench-campaign-overhead-") as tmp:
        folder = Path(tmp)
        hosts = write_hosts_yaml(folder, infra)
        separate_runs(hosts, folder / "warmup", 1)  # builds the image if needed
        alone = separate_runs(hosts, folder / "separate", args.jobs)
        together, closing = campaign(hosts, folder, args.jobs)
    print(f"controller overhead, {args.jobs} jobs of resnet50 cpu 2x1 on the two test hosts (seconds):")
    for what, runs in (("separate bench runs", alone), ("campaign jobs", together)):
        print(f"  {what + ':':<21} {', '.join(f'{o:.2f}' for o, _ in runs)}  (mean {mean([o for o, _ in runs]):.2f})")
        print(f"  {'  beyond start-up:':<21} {', '.join(f'{o - s:.2f}' for o, s in runs)}  "
              f"(start-up mean {mean([s for _, s in runs]):.2f})")
    later = together[1:] or together
    per_job = mean([o for o, _ in later])
    beyond = mean([o - s for o, s in later])
    print(f"  campaign's end, once: {closing:.2f} (the last collect, summary, plots, the hosts' lock)")
    print(f"  campaign / separate: {(sum(o for o, _ in together) + closing) / sum(o for o, _ in alone):.2f}")
    print(f"after the first job {per_job:.2f} s per job, {beyond:.2f} s beyond container and torch start-up: "
          f"{'within' if beyond <= TARGET_S else 'OVER'} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
