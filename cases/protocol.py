"""What the controller and the training processes agree on, in one place.

Standard library only, and Python 3.8 syntax: this module runs inside vendor
images with old interpreters as well as in the controller.

- The event line: ``:::BENCH {"time_ms": ..., "key": ..., "rank": ..., "value": {...}}``
  (``time_ms`` is wall-clock milliseconds since the epoch).
- The fix_hp grammar: ``key=value`` items separated by commas that are not inside
  ``[...]``, so ``lr_milestones=[30,60]`` is one item.
- The config-name grammars: a run's ``<nnodes>x<nproc>`` (``2x8``) and a hardware
  config ``<accelerator>x<nnodes>x<nproc>`` (``A100x1x8``, ``BI-V100x2x8``) or a
  bare accelerator name (``A100``).
- The stall watchdog's two hooks: ``heartbeat`` events every ``HEARTBEAT_S``
  while a rank waits for data or evaluates, and a Python stack dump of every
  thread into ``stacks_rank<rank>.log`` when a training process gets
  ``STACKS_SIGNAL`` (``python -m cases.stacks`` sends it inside a container).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

PREFIX = ":::BENCH "

# key -> what its value holds
EVENT_KEYS: Dict[str, str] = {
    "process_start": "{pid, host}; time_ms is when the process started, before any init",
    "config": "the effective, fully layered config (dict)",
    "world": "{world_size, rank, local_rank, node_rank, backend, device, precision, framework}",
    "flops": "{flops_per_sample (forward + backward of one sample, None when not counted), input_shape, batch, "
             "method, missing?}; once, before training (cases/flops.py)",
    "train_start": "{}",
    "heartbeat": "{phase: first_batch|eval, waited_s}; while a rank waits for an epoch's first batch "
                 "or evaluates (one when the wait begins, then every HEARTBEAT_S), never in a collective",
    "epoch_start": "{epoch}",
    "step": "{epoch, step, steps_total (the step budget: epochs, max_steps, max_samples), samples (global, "
            "this step), step_s, core_s}",
    "eval_start": "{epoch}",
    "eval_stop": "{epoch, acc (percent, all-reduced), samples}",
    "epoch_stop": "{epoch}",
    "train_stop": "{samples (global, whole run), steps, stop_reason}",
    "summary": "{core_s, step_s_p50, step_s_p90, step_s_max, peak_mem_gib, mem_total_gib, mem_source}",
    "run_stop": "{status: success|failed, error?}",
}
# The allreduce case (cases/allreduce) writes one of these per message size where
# training writes steps: {op, size_bytes, count, dtype, world_size, warmup_iters, iters,
# time_us (slowest rank, per iteration), algbw_gbps (size / time), busbw_gbps (algbw x 2(n-1)/n),
# check}. Not in EVENT_KEYS: only that case writes it.
BANDWIDTH_KEY = "bandwidth"
# Keys that show a rank is making progress (the stall watchdog's clock).
PROGRESS_KEYS = frozenset({"process_start", "config", "world", "train_start", "epoch_start", "step",
                           "heartbeat", "eval_start", "eval_stop", "epoch_stop", "train_stop", BANDWIDTH_KEY})

EVENT_FILE_RE = re.compile(r"^events_rank(\d+)\.log$")
STACKS_FILE_RE = re.compile(r"^stacks_rank(\d+)\.log$")

# Seconds between heartbeat events; the environment variable overrides it (tests).
HEARTBEAT_S = 30.0
HEARTBEAT_ENV = "BENCH_HEARTBEAT_S"
# The signal that makes a training process dump every thread's Python stack
# (faulthandler) into stacks_file_name(rank) in its log folder.
STACKS_SIGNAL = "SIGUSR1"


def event_file_name(rank: int) -> str:
    return "events_rank{}.log".format(rank)


def stacks_file_name(rank: int) -> str:
    """Where a rank's stack dumps go (empty: no dump was asked for)."""
    return "stacks_rank{}.log".format(rank)


def is_training_command(argv: List[str]) -> bool:
    """Whether a command line is a training process (``python [-u] -m cases.run ...``),
    not torchrun's agent, whose own arguments hold ``-m cases.run`` further on
    (a signal it does not handle would kill it)."""
    if len(argv) < 3 or not argv[0].rsplit("/", 1)[-1].startswith("python"):
        return False
    rest = argv[2:] if argv[1] == "-u" else argv[1:]
    return rest[:2] == ["-m", "cases.run"]


def encode_event(time_ms: int, key: str, rank: int, value: Any) -> str:
    """One event line, newline included. A value JSON cannot hold is written as its repr."""
    record = {"time_ms": time_ms, "key": key, "rank": rank, "value": value if value is not None else {}}
    try:
        return PREFIX + json.dumps(record, default=str) + "\n"
    except (TypeError, ValueError):
        record["value"] = repr(value)
        return PREFIX + json.dumps(record) + "\n"


def decode_event(line: str) -> Optional[Tuple[int, str, int, Dict[str, Any]]]:
    """(time_ms, key, rank, value) from any line holding the prefix; None for
    lines without it or with broken JSON. A non-dict value becomes {"value": v}."""
    start = line.find(PREFIX)
    if start < 0:
        return None
    try:
        record = json.loads(line[start + len(PREFIX):])
        value = record.get("value")
        return (int(record["time_ms"]), str(record["key"]), int(record.get("rank", 0)),
                value if isinstance(value, dict) else {"value": value})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class GrammarError(ValueError):
    """Text that does not follow one of the grammars above; the message says what was expected."""


_FIX_HP_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def split_fix_hp(text: Optional[str]) -> List[Tuple[str, str]]:
    """``"bs=256, lr_milestones=[30,60]"`` -> ``[("bs", "256"), ("lr_milestones", "[30,60]")]``.

    Empty items are skipped; ``None``, ``""`` and ``/`` (the pages' empty cell)
    give no items. Values stay text: each side reads them with its own rules
    (an unbalanced ``[`` stays in its value, for the reader to refuse).
    """
    if text is None or text.strip() in ("", "/"):
        return []
    items: List[str] = []
    depth = 0
    current: List[str] = []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    pairs: List[Tuple[str, str]] = []
    seen = set()
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _FIX_HP_KEY_RE.match(key):
            raise GrammarError("fix_hp: expected key=value (comma-separated pairs), got {!r}".format(item))
        if not value:
            raise GrammarError("fix_hp: {}: empty value (write null to unset a key)".format(key))
        if any(ch in value for ch in "\n\r\t"):
            raise GrammarError("fix_hp: {}: control characters in the value".format(key))
        if key in seen:
            raise GrammarError("fix_hp: {}: given twice".format(key))
        seen.add(key)
        pairs.append((key, value))
    return pairs


def join_fix_hp(pairs: List[Tuple[str, str]]) -> str:
    """The canonical text of parsed pairs (``bs=256,lr=0.72``), or ``""`` for none."""
    return ",".join("{}={}".format(key, value) for key, value in pairs)


_RUN_CONFIG_RE = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
_HARDWARE_CONFIG_RE = re.compile(r"^(?P<accelerator>.+?)x(?P<nnodes>[1-9][0-9]*)x(?P<nproc>[1-9][0-9]*)$")


def parse_run_config(name: str) -> Tuple[int, int]:
    """``"2x8"`` -> ``(2, 8)``."""
    match = _RUN_CONFIG_RE.match(name.strip())
    if not match:
        raise GrammarError("expected <nnodes>x<nproc_per_node> such as 1x1, 1x8 or 2x8, got {!r}".format(name))
    return int(match.group(1)), int(match.group(2))


class HardwareConfig(NamedTuple):
    name: str
    accelerator: str
    nnodes: Optional[int]  # None for a bare accelerator name
    nproc: Optional[int]


def parse_hardware_config(name: str) -> HardwareConfig:
    """``"BI-V100x2x8"`` -> (BI-V100, 2, 8); ``"A100"`` -> (A100, None, None).

    The accelerator is everything before the trailing ``x<n>x<p>``, so a name
    holding an ``x`` of its own (``Max1100x1x8``) keeps it.
    """
    if not name or "/" in name or "\\" in name or name.startswith(".") or any(c.isspace() for c in name):
        raise GrammarError("{!r} is not a config name like A100x1x8".format(name))
    match = _HARDWARE_CONFIG_RE.match(name)
    if match is None:
        return HardwareConfig(name, name, None, None)
    return HardwareConfig(name, match.group("accelerator"), int(match.group("nnodes")), int(match.group("nproc")))


def hardware_config_name(accelerator: str, nnodes: int, nproc: int) -> str:
    return "{}x{}x{}".format(accelerator, nnodes, nproc)


def percentile(values: List[float], q: float) -> Optional[float]:
    """Nearest-rank percentile, q in (0, 100]: the step-time figures of the training
    side's summary and of the harness's per-rank timing are read the same way."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
