"""The allreduce case's bandwidth table, read back from a run's event logs
(one ``bandwidth`` event per message size, cases/protocol.py) and written out
as nccl-tests prints it.

Every rank writes the same figures (the case all-reduces the slowest rank's
time), so one rank's events make the table: rank 0's, or the lowest rank
collected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cases.protocol import BANDWIDTH_KEY
from harness.core.events import Event, read_event_files


@dataclass(frozen=True)
class BandwidthRow:
    size_bytes: int
    count: int  # elements
    dtype: str
    time_us: float  # per all-reduce, slowest rank
    algbw_gbps: float  # size / time, GB/s (1e9 bytes)
    busbw_gbps: float  # algbw x 2(n-1)/n
    iters: int
    check: str  # ok | skipped


@dataclass(frozen=True)
class BandwidthTable:
    op: str
    world_size: int
    rank: int  # whose events these are
    rows: tuple[BandwidthRow, ...]

    @property
    def peak_busbw_gbps(self) -> float | None:
        return max((row.busbw_gbps for row in self.rows), default=None)

    @property
    def avg_busbw_gbps(self) -> float | None:
        """The mean over sizes, as nccl-tests' "Avg bus bandwidth" line."""
        return sum(row.busbw_gbps for row in self.rows) / len(self.rows) if self.rows else None


def bandwidth_table(by_rank: Mapping[int, list[Event]]) -> BandwidthTable | None:
    """The table from parsed event logs (rank -> events); None when no rank
    wrote a bandwidth event."""
    for rank in sorted(by_rank):
        events = [e for e in by_rank[rank] if e.key == BANDWIDTH_KEY]
        if not events:
            continue
        rows = tuple(BandwidthRow(
            size_bytes=int(e.value["size_bytes"]), count=int(e.value["count"]), dtype=str(e.value.get("dtype", "")),
            time_us=float(e.value["time_us"]), algbw_gbps=float(e.value["algbw_gbps"]),
            busbw_gbps=float(e.value["busbw_gbps"]), iters=int(e.value.get("iters", 0)),
            check=str(e.value.get("check", "")),
        ) for e in events)
        first = events[0].value
        return BandwidthTable(op=str(first.get("op", "all_reduce")), world_size=int(first.get("world_size", 0)),
                              rank=rank, rows=rows)
    return None


def read_bandwidth(folder: Path) -> BandwidthTable | None:
    """The table from a run's collected logs (every events_rank<N>.log below folder)."""
    return bandwidth_table(read_event_files(folder))


def _bw(value: float) -> str:
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def render_table(table: BandwidthTable) -> str:
    """Plain text, one line per size: size, count, type, time_us, algbw, busbw."""
    header = ("size(B)", "count", "type", "time_us", "algbw(GB/s)", "busbw(GB/s)")
    lines = [(str(r.size_bytes), str(r.count), r.dtype, f"{r.time_us:.2f}", _bw(r.algbw_gbps), _bw(r.busbw_gbps))
             for r in table.rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    out = [f"# {table.op}, {table.world_size} ranks, busbw = algbw x 2(n-1)/n"]
    out += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in (header, *lines)]
    if table.avg_busbw_gbps is not None:
        out.append(f"# avg busbw {_bw(table.avg_busbw_gbps)} GB/s, peak {_bw(table.peak_busbw_gbps or 0.0)} GB/s")
    return "\n".join(out) + "\n"
