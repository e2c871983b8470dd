"""A failed node's lines: the failing rank's own exception, from its own stderr.

torchrun (`--redirects 3 --tee 3`, harness/backends/launch.py) writes each
rank's stderr to `torchrun/<run>/attempt_<n>/<local_rank>/stderr.log` below the
node's log folder, and tees it into the node's output with a `[default<k>]:`
prefix; torch's own excepthook prefixes each traceback line with `[rank<r>]:`.
The node's output ends with torchrun's own traceback and its `ChildFailedError`
summary, which say nothing of what went wrong. This module reads the rank's
last traceback instead: its last frames (the code lines kept, the `^^^^` marks
dropped) and its message.

Which rank of a node: the root cause first (harness/core/diagnose.py orders
the ranks that failed by themselves before those the harness stopped); a rank
the harness stopped shows only its message, labelled so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cases.protocol import PREFIX
from harness.core.results import NodeOutcome

TRACEBACK_HEAD = "Traceback (most recent call last):"
FRAMES_SHOWN = 3  # the innermost frames: where it was raised and what called it
MESSAGE_LINES = 6  # an exception's message longer than this is cut
LAST_LINES = 15  # of a node's output, when no rank left a traceback
# The prefixes torchrun's tee and torch's excepthook put before a rank's lines.
_PREFIX_RE = re.compile(r"^(?:\[default\d+\]:)?(?:\[rank\d+\]: ?)?")
_RANK_PREFIX_RE = re.compile(r"\[rank(\d+)\]:")
_MARKS_RE = re.compile(r"^\s*[\^~]+\s*$")  # Python 3.11's marks under the failing expression
_FRAME_RE = re.compile(r'^\s*File "[^"]*", line \d+')
# A line that is not the exception's any more: glog-style lines of torch (W1206 01:27:23...), a new traceback.
_NOT_MESSAGE_RE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d|Traceback \(most recent call last\):)")
NODE_LOG = "container.log"  # a node's output in its folder (harness/backends/payload.py)
_STDERR_RE = re.compile(r"attempt_(\d+)/(\d+)/stderr\.log$")


@dataclass(frozen=True)
class RankTraceback:
    """A rank's last exception as its stderr shows it."""

    frames: list[list[str]]  # the innermost FRAMES_SHOWN frames: the `File ...` line and its code lines
    message: list[str]  # `ValueError: ...` and its continuation lines

    def lines(self) -> list[str]:
        return [line for frame in self.frames for line in frame] + self.message


def strip_prefixes(line: str) -> str:
    """A rank's line without torchrun's `[default0]:` and torch's `[rank3]:` prefixes."""
    return _PREFIX_RE.sub("", line)


def last_traceback(text: str, frames_shown: int = FRAMES_SHOWN) -> RankTraceback | None:
    """The last traceback in a rank's output (the exception that ended it); None when it holds none."""
    lines = [strip_prefixes(line.rstrip("\n")) for line in text.splitlines()]
    heads = [i for i, line in enumerate(lines) if line.strip() == TRACEBACK_HEAD]
    if not heads:
        return None
    frames: list[list[str]] = []
    message: list[str] = []
    for line in lines[heads[-1] + 1:]:
        if message:
            if not line.strip() or _NOT_MESSAGE_RE.match(line) or len(message) >= MESSAGE_LINES:
                break
            message.append(line)
        elif _FRAME_RE.match(line):
            frames.append([line])
        elif line.startswith(" ") or not line.strip():
            if frames and line.strip() and not _MARKS_RE.match(line):
                frames[-1].append(line)
        else:
            message.append(line)
    if not message:
        return None
    return RankTraceback(frames[-frames_shown:] if frames_shown > 0 else [], message)


def rank_outputs(folder: Path, node_rank: int, nproc_per_node: int) -> dict[int, tuple[str, str]]:
    """Global rank -> (where it came from, the rank's own stderr) for one node's collected folder:
    torchrun's per-rank stderr.log files (the newest attempt), else the node's output split by the
    `[rank<r>]:` prefix of its lines."""
    found: dict[int, tuple[int, Path]] = {}
    for path in sorted(folder.rglob("stderr.log")):
        match = _STDERR_RE.search(path.as_posix())
        if match is None:
            continue
        attempt, local_rank = int(match.group(1)), int(match.group(2))
        rank = node_rank * nproc_per_node + local_rank
        if rank not in found or attempt >= found[rank][0]:
            found[rank] = (attempt, path)
    outputs = {rank: (str(path.relative_to(folder)), _read(path)) for rank, (_, path) in found.items()}
    if any(text.strip() for _, text in outputs.values()):
        return outputs
    by_rank: dict[int, list[str]] = {}
    for line in _read(folder / NODE_LOG).splitlines():
        match = _RANK_PREFIX_RE.search(line)
        if match is not None:
            by_rank.setdefault(int(match.group(1)), []).append(line)
    return {rank: (NODE_LOG, "\n".join(lines)) for rank, lines in by_rank.items()}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def node_error_lines(folder: Path, node_rank: int, nproc_per_node: int, own: list[int],
                     stopped: list[int]) -> list[str] | None:
    """The lines shown for a failed node: the first of its ranks in `own` (the ranks that failed by
    themselves, root cause first: the others are its collateral) with a traceback, in full; else the first of `stopped` (ranks the
    harness stopped), its message only; else any rank's traceback. None: no rank left one."""
    outputs = rank_outputs(folder, node_rank, nproc_per_node)
    tracebacks = {rank: (source, found) for rank, (source, text) in sorted(outputs.items())
                  if (found := last_traceback(text)) is not None}
    for rank in own:
        if rank in tracebacks:
            source, found = tracebacks[rank]
            whose = "own error" if rank == own[0] else f"error, collateral of rank {own[0]}"
            return [f"rank {rank}'s {whose} ({source}):", *found.lines()]
    for rank in stopped:
        if rank in tracebacks:
            return [f"rank {rank} was stopped by the harness: {' '.join(tracebacks[rank][1].message)}"]
    for rank, (source, found) in tracebacks.items():
        return [f"rank {rank}'s error ({source}):", *found.lines()]
    return None


def without_launcher_noise(lines: list[str]) -> list[str]:
    """A node's output tail without what says nothing of the error: the `^^^^` marks, torchrun's
    own traceback (its lines carry no rank's prefix) and its `====` failure summary."""
    rules = [strip_prefixes(line).startswith("=" * 20) for line in lines]
    in_summary = sum(rules) % 2 == 1  # the tail begins inside the summary
    kept: list[str] = []
    for line, rule in zip(lines, rules):
        bare = strip_prefixes(line)
        if rule:
            in_summary = not in_summary
            continue
        launcher = bare == line and (line.startswith(" ") or line.strip() == TRACEBACK_HEAD
                                     or line.startswith("torch.distributed.elastic"))
        if not (in_summary or launcher or _MARKS_RE.match(bare)):
            kept.append(line)
    return kept


def with_rank_errors(nodes: list[NodeOutcome], failed_nodes: list[int], nproc_per_node: int, own: list[int],
                     stopped: list[int]) -> list[NodeOutcome]:
    """Each node that failed, with its failing rank's own error as its last lines (else its output
    tail without torchrun's noise); the others as they were."""
    updated = []
    for node in nodes:
        if node.node_rank not in failed_nodes and node.exit_code in (0, None):
            updated.append(node)
            continue
        folder = Path(node.log_dir)
        lines = node_error_lines(folder, node.node_rank, nproc_per_node, own, stopped)
        if lines is None:
            output = _read(folder / NODE_LOG).splitlines() or node.last_lines
            lines = [line for line in without_launcher_noise(output) if PREFIX not in line][-LAST_LINES:]
        updated.append(node.model_copy(update={"last_lines": lines}))
    return updated
