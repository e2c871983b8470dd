"""The summary's figures (matplotlib, Agg, no pyplot state): p_core across a
job's repeats and across past nights, step time across a run, and device (or,
without a device tool, host) utilisation and memory from monitor.csv. Each is a
PNG, embedded in summary.html as a data URI and written beside summary.md."""

from __future__ import annotations

import base64
import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.core.events import read_event_files

_SIZE = (6.4, 2.8)
_DPI = 90


@dataclass(frozen=True)
class Plot:
    name: str  # file stem, e.g. job1-p_core-repeats
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def file_name(self) -> str:
        return f"{self.name}.png"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def repeats_plot(name: str, title: str, values: list[tuple[str, float]]) -> Plot | None:
    """p_core of each repeat (run id -> value), with the median."""
    if len(values) < 2:
        return None
    figure = Figure(figsize=_SIZE)
    axes = figure.subplots()
    xs = list(range(1, len(values) + 1))
    ys = [v for _, v in values]
    axes.plot(xs, ys, marker="o")
    ordered = sorted(ys)
    middle = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    axes.axhline(middle, linestyle="--", linewidth=1, color="gray", label=f"median {middle:,.1f}")
    axes.set_xticks(xs)
    axes.set_xlabel("repeat")
    axes.set_ylabel("p_core (samples/s)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    return Plot(name, title, _png(figure))


def nights_plot(name: str, title: str, points: list[tuple[str, float, bool]]) -> Plot | None:
    """p_core of past runs of the same setup, oldest first: (finished_at, value, from this campaign)."""
    if len(points) < 2:
        return None
    figure = Figure(figsize=_SIZE)
    axes = figure.subplots()
    xs = list(range(len(points)))
    axes.plot(xs, [p[1] for p in points], color="tab:blue", linewidth=1)
    ours = [(x, p[1]) for x, p in zip(xs, points) if p[2]]
    past = [(x, p[1]) for x, p in zip(xs, points) if not p[2]]
    if past:
        axes.scatter([x for x, _ in past], [y for _, y in past], color="tab:blue", s=14, label="earlier runs")
    if ours:
        axes.scatter([x for x, _ in ours], [y for _, y in ours], color="tab:red", s=18, label="this campaign")
    step = max(1, len(points) // 6)
    axes.set_xticks(xs[::step])
    axes.set_xticklabels([points[i][0][5:16].replace("T", " ") for i in xs[::step]], fontsize=7)  # MM-DD HH:MM
    axes.set_ylabel("p_core (samples/s)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    return Plot(name, title, _png(figure))


def step_times(run_dir: Path) -> list[tuple[int, float]]:
    """(global step, step seconds) of rank 0 in a run's collected event logs."""
    events = read_event_files(run_dir).get(0, [])
    steps: list[tuple[int, float]] = []
    for event in events:
        if event.key == "step" and isinstance(event.value.get("step_s"), (int, float)):
            steps.append((int(event.value.get("step", len(steps) + 1)), float(event.value["step_s"])))
    return steps


def step_time_plot(name: str, title: str, run_dir: Path) -> Plot | None:
    steps = step_times(run_dir)
    if not steps:
        return None
    figure = Figure(figsize=_SIZE)
    axes = figure.subplots()
    axes.plot([s for s, _ in steps], [t * 1000 for _, t in steps], marker="." if len(steps) < 50 else None)
    axes.set_xlabel("step")
    locator = axes.xaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):  # a linear axis' AutoLocator is one
        locator.set_params(integer=True)
    axes.set_ylabel("step time (ms), rank 0")
    axes.set_title(title, fontsize=9)
    return Plot(name, title, _png(figure))


def _monitor_series(csv_path: Path) -> tuple[str, dict[str, list[tuple[float, float]]], dict[str, list[tuple[float, float]]]]:
    """(what was sampled, utilisation series, memory series in GiB) by device or host."""
    util: dict[str, list[tuple[float, float]]] = defaultdict(list)
    memory: dict[str, list[tuple[float, float]]] = defaultdict(list)
    host_util: dict[str, list[tuple[float, float]]] = defaultdict(list)
    host_memory: dict[str, list[tuple[float, float]]] = defaultdict(list)
    start: float | None = None
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                t = int(row["timestamp_ms"]) / 1000.0
            except (KeyError, TypeError, ValueError):
                continue
            start = t if start is None else start
            t -= start
            if row.get("kind") == "device":
                label = f"device {row.get('device_index', '?')}"
                if row.get("util_pct"):
                    util[label].append((t, float(row["util_pct"])))
                if row.get("mem_used_mib"):
                    memory[label].append((t, float(row["mem_used_mib"]) / 1024.0))
            elif row.get("kind") == "host":
                label = row.get("host") or "host"
                if row.get("cpu_pct"):
                    host_util[label].append((t, float(row["cpu_pct"])))
                if row.get("mem_used_gib"):
                    host_memory[label].append((t, float(row["mem_used_gib"])))
    if util or memory:
        return "device", dict(util), dict(memory)
    return "host", dict(host_util), dict(host_memory)


def monitor_plot(name: str, title: str, csv_paths: list[Path]) -> Plot | None:
    """Utilisation and memory over the run from the nodes' monitor.csv."""
    util: dict[str, list[tuple[float, float]]] = {}
    memory: dict[str, list[tuple[float, float]]] = {}
    kinds = set()
    for path in csv_paths:
        if not path.is_file():
            continue
        kind, u, m = _monitor_series(path)
        kinds.add(kind)
        node = path.parent.name
        util.update({f"{node} {k}": v for k, v in u.items()})
        memory.update({f"{node} {k}": v for k, v in m.items()})
    if not util and not memory:
        return None
    what = "device" if kinds == {"device"} else "host (no device tool)"
    figure = Figure(figsize=(_SIZE[0], _SIZE[1] * 1.6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    for label, series in util.items():
        top.plot([t for t, _ in series], [v for _, v in series], label=label, linewidth=1)
    for label, series in memory.items():
        bottom.plot([t for t, _ in series], [v for _, v in series], label=label, linewidth=1)
    top.set_ylabel("utilisation (%)" if what == "device" else "CPU (%)")
    bottom.set_ylabel("memory (GiB)")
    bottom.set_xlabel("seconds since the first sample")
    top.set_title(f"{title}: {what}", fontsize=9)
    if len(util) <= 8 and util:
        top.legend(fontsize=7)
    return Plot(name, title, _png(figure))
