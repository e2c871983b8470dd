"""Energy from a power trace: the trapezoid over (time, watts) samples, clipped
to a window.

Power between two samples is taken to move in a straight line from one to the
other. At a window edge that falls between two samples the line is cut there
(the value at the edge is interpolated), so a sample outside the window counts
only for the part of its segment that lies inside. Time the samples do not
span (the monitor started after the window opened, or stopped before it
closed) and silences longer than ``max_gap_ms`` (a sampler that hung, a host
that dropped) are not guessed at: they are left out of the energy and show as
the difference between ``covered_s`` and the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MS_PER_S = 1000.0


@dataclass(frozen=True)
class Integral:
    energy_j: float
    covered_s: float  # the part of the window spanned by consecutive samples at most max_gap_ms apart
    samples: int  # samples stamped inside the window (edges included)
    max_w: float | None  # the highest sample inside the window (a window between two samples: its edges)
    gaps: int  # silences longer than max_gap_ms that overlap the window: not counted

    @property
    def avg_w(self) -> float | None:
        """Energy over the covered time: the time-weighted mean power."""
        return self.energy_j / self.covered_s if self.covered_s > 0 else None


def _at(t0: int, p0: float, t1: int, p1: float, t: float) -> float:
    return p0 + (p1 - p0) * (t - t0) / (t1 - t0)


def integrate_power(points: Sequence[tuple[int, float]], start_ms: int, stop_ms: int,
                    max_gap_ms: int) -> Integral:
    """The energy (J) of ``points`` (epoch ms, W; any order) over [start_ms, stop_ms]."""
    ordered = sorted(points)
    inside = [watts for stamp, watts in ordered if start_ms <= stamp <= stop_ms]
    energy_ms = covered_ms = 0.0  # W x ms, ms
    gaps = 0
    edges: list[float] = []
    for (t0, p0), (t1, p1) in zip(ordered, ordered[1:]):
        low, high = max(t0, start_ms), min(t1, stop_ms)
        if t1 <= t0 or high <= low:
            continue  # a repeated stamp, or a segment outside the window
        if t1 - t0 > max_gap_ms:
            gaps += 1
            continue
        w_low, w_high = _at(t0, p0, t1, p1, low), _at(t0, p0, t1, p1, high)
        energy_ms += (w_low + w_high) / 2 * (high - low)
        covered_ms += high - low
        edges += (w_low, w_high)
    peak = max(inside or edges) if inside or edges else None
    return Integral(energy_j=energy_ms / MS_PER_S, covered_s=covered_ms / MS_PER_S, samples=len(inside),
                    max_w=peak, gaps=gaps)
