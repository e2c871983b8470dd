"""Devices that sat idle while the run trained: a device of the job whose
median utilisation over the training window, as its tool reported it
(monitor.csv util_pct), is below ``cluster.min_device_util``. A warning in the
results, not a failure: a run fed too slowly, or placed on the wrong device,
still finishes, and its figure is then not the hardware's. A tool that reports
no utilisation (or a vendor without a device tool) gives no warning."""

from __future__ import annotations

import statistics

from harness.core.monitor_window import TrainingMonitors


def low_device_use(monitors: TrainingMonitors, min_share: float) -> list[str]:
    """One line per device whose median utilisation stays below ``min_share`` (0..1)."""
    warnings: list[str] = []
    for node in monitors.nodes:
        for index in node.device_indices():
            utils = monitors.in_window(node.device_series(index, lambda sample: sample.util_pct))
            if not utils:
                continue
            median = statistics.median(utils)
            if median < min_share * 100:
                warnings.append(f"low device utilisation during training: {node.host} device {index}: "
                                f"median {median:.0f}%, max {max(utils):.0f}% over {len(utils)} samples "
                                f"(cluster.min_device_util is {min_share:.0%})")
    return warnings
