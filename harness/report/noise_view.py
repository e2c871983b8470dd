"""How the noise rule is set on the command line (`--noise-runs`, `--noise-k` on
bench, report, history and compare) and how its verdicts are printed: one line
per run, p_core first."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from harness.report.noise import DEFAULT_K, DEFAULT_RUNS, MIN_BAND, MIN_RUNS, NoiseRule, RunCheck

if TYPE_CHECKING:  # rich loads when a command prints, not when the parser is built
    from rich.console import Console

STYLES = {"regression": "bold yellow", "above noise": "green", "within noise": "dim", "not enough history": "dim"}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def add_noise_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--noise-runs", type=_positive_int, default=DEFAULT_RUNS, metavar="N",
                        help=f"judge a run against the median and spread of the last N successful comparable runs "
                             f"(default {DEFAULT_RUNS}; fewer than {MIN_RUNS}: not judged)")
    parser.add_argument("--noise-k", type=_positive_float, default=DEFAULT_K, metavar="K",
                        help=f"a change is beyond noise outside K x 1.4826 x MAD of those runs, never narrower than "
                             f"±{MIN_BAND * 100:.0f}%% (default {DEFAULT_K:g})")


def rule_of(args: argparse.Namespace) -> NoiseRule:
    return NoiseRule(runs=args.noise_runs, k=args.noise_k)


def print_check(console: Console, run_id: str, check: RunCheck | None) -> None:
    """`<run> regression: p_core ... ; p_train ...` (or within noise, above noise, not enough history)."""
    from rich.text import Text

    if check is None:
        return
    label = "" if check.verdict == "not enough history" else f"{check.verdict}: "
    console.print(Text.assemble((f"{run_id} {label}", STYLES[check.verdict]), check.describe()), soft_wrap=True)


def cell(check: RunCheck | None) -> str:
    """The `history` table's short form: p_core's change, its band and the verdict."""
    if check is None:
        return "/"
    if check.verdict == "not enough history":
        return f"n={len(check.baseline_runs)}, too few"
    lead = check.checks[0] if check.checks else None
    if lead is None:
        return "/"
    worst = "regression" if check.regression else check.verdict
    return f"{lead.column} {lead.change:+.1%} (±{lead.band.half_width:.1%}) {worst}"
