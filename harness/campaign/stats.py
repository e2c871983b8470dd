"""Statistics over a job's repeats: median, mean, standard deviation,
coefficient of variation, min/max and, from five values on, the MLPerf-style
olympic mean (the best and the worst dropped)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

OLYMPIC_MIN = 5


@dataclass(frozen=True)
class Spread:
    n: int
    median: float
    mean: float
    stdev: float | None  # sample standard deviation; None for one value
    cv: float | None  # stdev / mean; None for one value or a zero mean
    min: float
    max: float
    olympic_mean: float | None  # None below OLYMPIC_MIN values

    def describe(self, digits: int = 1) -> str:
        text = f"median {self.median:,.{digits}f}"
        if self.n > 1:
            text += f" (n={self.n}, mean {self.mean:,.{digits}f}, min {self.min:,.{digits}f}, max {self.max:,.{digits}f}"
            if self.cv is not None:
                text += f", CV {self.cv:.1%}"
            if self.olympic_mean is not None:
                text += f", olympic {self.olympic_mean:,.{digits}f}"
            text += ")"
        return text


def spread(values: list[float | None]) -> Spread | None:
    """The spread of the values that are there; None when none is."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    mean = statistics.fmean(data)
    stdev = statistics.stdev(data) if len(data) > 1 else None
    cv = stdev / mean if stdev is not None and mean else None
    olympic = statistics.fmean(data[1:-1]) if len(data) >= OLYMPIC_MIN else None
    return Spread(n=len(data), median=statistics.median(data), mean=mean, stdev=stdev, cv=cv,
                  min=data[0], max=data[-1], olympic_mean=olympic)
