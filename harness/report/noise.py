"""Is a change real or noise? The rule that judges a run against the spread of its
comparable history (and `compare` against the spread of repeats).

The baseline is the last `runs` successful runs of the same job. Its centre is the
median, its spread the MAD (median absolute deviation), scaled by 1.4826 so that
it estimates a standard deviation for normal noise while one wild night moves it
little. A change is beyond noise when it leaves the band

    median × (1 ± max(k × 1.4826 × MAD / median, MIN_BAND))

Two cases are decided rather than guessed:
- fewer than `min_runs` (3) earlier runs: a MAD of one or two values says nothing
  about the noise, and a fixed fraction would be a guess dressed as a verdict, so
  the run is "not enough history (n runs)": the change is shown, not judged;
- an identical history (MAD 0, e.g. a simulated device or a rounded figure): the
  band would be zero and every wobble a regression, so it is never narrower than
  MIN_BAND (±2%) of the median.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal

MAD_TO_SIGMA = 1.4826  # MAD x this = the standard deviation, for normal noise
DEFAULT_RUNS = 10
DEFAULT_K = 3.0
MIN_RUNS = 3
MIN_BAND = 0.02  # the narrowest band, as a share of the median

Verdict = Literal["regression", "within noise", "above noise", "not enough history"]


@dataclass(frozen=True)
class NoiseRule:
    runs: int = DEFAULT_RUNS  # N: how many of the latest successful comparable runs
    k: float = DEFAULT_K  # how many (scaled) MADs make the band's half-width
    min_runs: int = MIN_RUNS
    min_band: float = MIN_BAND

    def __post_init__(self) -> None:
        if self.runs < 1 or self.k <= 0 or self.min_band < 0:
            raise ValueError(f"noise rule: runs >= 1 and k > 0 expected, got runs={self.runs}, k={self.k}")

    def describe(self) -> str:
        return (f"band = {self.k:g} x {MAD_TO_SIGMA} x MAD of the last {self.runs} runs, "
                f"at least ±{self.min_band:.0%}; {self.min_runs} runs needed")


@dataclass(frozen=True)
class Band:
    """The noise of a set of values: its median and the band's relative half-width."""

    n: int
    median: float
    mad: float
    half_width: float  # share of the median

    def verdict(self, value: float, rule: NoiseRule) -> Verdict:
        if self.n < rule.min_runs:
            return "not enough history"
        change = value / self.median - 1.0
        if change < -self.half_width:
            return "regression"
        return "above noise" if change > self.half_width else "within noise"


def band(values: list[float], rule: NoiseRule) -> Band | None:
    """The median and noise band of the values; None when there is none (or a median of 0)."""
    data = [v for v in values if v is not None]
    if not data:
        return None
    median = statistics.median(data)
    if median == 0:
        return None
    mad = statistics.median(abs(v - median) for v in data)
    return Band(n=len(data), median=median, mad=mad,
                half_width=max(rule.k * MAD_TO_SIGMA * mad / abs(median), rule.min_band))


def relative_band(deviations: list[float], rule: NoiseRule) -> float:
    """A band's half-width from relative deviations (value / its own median - 1) pooled
    over several groups of repeats."""
    mad = statistics.median(abs(d) for d in deviations)
    return max(rule.k * MAD_TO_SIGMA * mad, rule.min_band)


@dataclass(frozen=True)
class MetricCheck:
    column: str
    value: float
    band: Band
    verdict: Verdict

    @property
    def change(self) -> float:
        return self.value / self.band.median - 1.0

    def describe(self, lead: bool) -> str:
        direction = "below" if self.change < 0 else "above"
        if lead:
            text = (f"{self.column} {self.value:,.1f} is {abs(self.change):.1%} {direction} the median "
                    f"{self.band.median:,.1f}")
        else:
            text = f"{self.column} {self.change:+.1%}"
        if self.verdict == "not enough history":
            return text
        return f"{text} (noise ±{self.band.half_width:.1%}): {self.verdict}"


@dataclass(frozen=True)
class RunCheck:
    """One run against its history: one line, p_core first."""

    run_id: str
    rule: NoiseRule
    baseline_runs: list[str]  # newest first
    checks: list[MetricCheck] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        if len(self.baseline_runs) < self.rule.min_runs:
            return "not enough history"
        verdicts = {check.verdict for check in self.checks}
        for verdict in ("not enough history", "regression", "above noise"):
            if verdict in verdicts:
                return verdict
        return "within noise"

    @property
    def regression(self) -> bool:
        return self.verdict == "regression"

    def describe(self) -> str:
        parts = [check.describe(lead=index == 0) for index, check in enumerate(self.checks)]
        n = len(self.baseline_runs)
        runs = ", ".join(self.baseline_runs)
        if self.verdict == "not enough history":
            head = f"not enough history ({n} earlier run{'s' if n != 1 else ''}, {self.rule.min_runs} needed for a noise band)"
            return head + (": " + "; ".join(parts) + f", not judged (against {runs})" if parts else "")
        return ("; ".join(parts) + f" — median and noise of the last {n} successful runs ({runs}); "
                f"band {self.rule.k:g} x {MAD_TO_SIGMA} x MAD, at least ±{self.rule.min_band:.0%}")


def check_run(run_id: str, values: dict[str, float | None], history: dict[str, list[float]],
              baseline_runs: list[str], rule: NoiseRule) -> RunCheck | None:
    """`values` (column -> this run's figure, in the order to show) against `history`
    (column -> the baseline runs' figures); None when the run has none of the figures."""
    checks = []
    for column, value in values.items():
        found = band(history.get(column, []), rule)
        if value is None or found is None:
            continue
        checks.append(MetricCheck(column, value, found, found.verdict(value, rule)))
    if not checks and all(value is None for value in values.values()):
        return None
    return RunCheck(run_id, rule, baseline_runs, checks)
