"""How long the command line takes to start: wall time of `python -m harness ARGS`
(default `--help`), best and median of N runs, beside a bare `python -c pass`
(the interpreter's own start-up), and the slowest imports of one run
(`python -X importtime`). Target (issue 15): `--help` in at most 0.5 s.

    python bench/cli_start.py [--repeats 5] [--top 8] [-- ARGS...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    module: str
    cumulative_s: float


def wall_s(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    return time.perf_counter() - started


def slowest_imports(args: list[str], top: int) -> list[Import]:
    """Top-level imports (the ones `-X importtime` prints unindented) by their cumulative time."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    found: list[Import] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # " name" at the top, two more spaces per level below
            found.append(Import(name.strip(), int(cumulative) / 1e6))
    return sorted(found, key=lambda imp: imp.cumulative_s, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="how many top-level imports to list")
    parser.add_argument("args", nargs="*", default=["--help"], help="arguments of `python -m harness` (after --)")
    opts = parser.parse_args()

    for label, argv in (("python -c pass", [sys.executable, "-c", "pass"]),
                        (f"python -m harness {' '.join(opts.args)}", [sys.executable, "-m", "harness", *opts.args])):
        times = [wall_s(argv) for _ in range(opts.repeats)]
        print(f"{label:<40} best {min(times):.3f} s  median {statistics.median(times):.3f} s  ({opts.repeats} runs)")
    print("slowest top-level imports (cumulative):")
    for imp in slowest_imports(opts.args, opts.top):
        print(f"  {imp.cumulative_s:7.3f} s  {imp.module}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
