"""Where a stalled run hung: the ranks' Python stacks, grouped.

Before a stalled run is stopped, every training process appends the stacks of
all its threads to ``stacks_rank<rank>.log`` (cases/run.py, faulthandler),
which comes back with the node's logs. Each rank's main thread (the one that
runs cases/run.py ``main``) is reduced to its innermost frames; ranks that
stand in the same frames form a group. In a typical hang most ranks wait in
the same collective and one rank is somewhere else: that rank, outside the
biggest group, is named first in the failure report, with its host and the
innermost frame of the training code. Stacks alone cannot always say who waits
for whom (a rank waiting in backward shows no collective: the wait is in C++),
so a node the backend found frozen when it asked for the dump (a paused
container, stopped processes) counts too: its ranks waited for nobody.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cases.protocol import STACKS_FILE_RE
from harness.core.results import HangOutlier, HangTriage, NodeOutcome, StackGroup

GROUP_DEPTH = 3  # ranks whose innermost this many frames agree wait in one place
TRAINING_PREFIX = "cases/"  # where the training code's frames come from

# faulthandler's thread header: "Thread 0x7f... (most recent call first):", "Current thread 0x7f... (...):"
# (newer Pythons may name the thread between the id and the parenthesis); a one-thread dump says "Stack".
_THREAD_RE = re.compile(r"^(?P<current>Current thread|Thread) (?P<id>0x[0-9a-fA-F]+)\b.*\(most recent call first\):\s*$")
_STACK_RE = re.compile(r"^Stack \(most recent call first\):\s*$")
_FRAME_RE = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+|\?+) in (?P<function>.*?)\s*$')
_PACKAGES_RE = re.compile(r"/(?:site|dist)-packages/(?P<rest>.+)$")
_STDLIB_RE = re.compile(r"/lib/python\d+(?:\.\d+)?t?/(?P<rest>.+)$")


@dataclass(frozen=True)
class Frame:
    path: str  # as the dump wrote it, on the node
    line: int  # 0 when the dump did not know it
    function: str

    @property
    def file(self) -> str:
        """The path a reader recognises: cases/driver.py for the training code,
        torch/autograd/graph.py for an installed package, threading.py for the
        standard library, else the file's name."""
        path = self.path.replace("\\", "/")
        if match := _PACKAGES_RE.search(path):
            return match.group("rest")
        if path.startswith(TRAINING_PREFIX):
            return path
        if (index := path.rfind("/" + TRAINING_PREFIX)) >= 0:
            return path[index + 1:]
        if match := _STDLIB_RE.search(path):
            return match.group("rest")
        return path.rsplit("/", 1)[-1]

    @property
    def text(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"

    @property
    def in_training_code(self) -> bool:
        return self.file.startswith(TRAINING_PREFIX)


@dataclass(frozen=True)
class ThreadStack:
    thread_id: str  # "0x7f..."; "" for a one-thread dump
    current: bool  # the thread that took the signal
    frames: tuple[Frame, ...]  # innermost first, as faulthandler writes them

    def runs_training_main(self) -> bool:
        return any(f.file == f"{TRAINING_PREFIX}run.py" and f.function == "main" for f in self.frames)


def parse_dumps(text: str) -> list[list[ThreadStack]]:
    """Every dump in a stacks file, oldest first; each a list of its threads.

    Dumps are appended with nothing between them, while the threads of one dump
    are separated by a blank line: a thread header right after a frame line, or
    a thread id seen twice, starts the next dump."""
    dumps: list[list[ThreadStack]] = []
    header: tuple[str, bool] | None = None
    frames: list[Frame] = []
    previous_blank = True

    def close() -> None:
        if header is not None:
            dumps[-1].append(ThreadStack(header[0], header[1], tuple(frames)))

    for raw in text.splitlines():
        thread, single = _THREAD_RE.match(raw), _STACK_RE.match(raw)
        if thread or single:
            close()
            thread_id = thread.group("id") if thread else ""
            seen = {t.thread_id for t in dumps[-1]} if dumps else set()
            if not dumps or single or not previous_blank or thread_id in seen:
                dumps.append([])
            header, frames = (thread_id, bool(thread and thread.group("current") == "Current thread")), []
        elif (frame := _FRAME_RE.match(raw)) and header is not None:
            line = frame.group("line")
            frames.append(Frame(frame.group("file"), int(line) if line.isdigit() else 0, frame.group("function")))
        previous_blank = not raw.strip()
    close()
    return [dump for dump in dumps if dump]


def main_thread(threads: list[ThreadStack]) -> ThreadStack | None:
    """The thread that runs the training: through cases/run.py main, else the
    thread that took the signal, else the first one listed."""
    for pick in (ThreadStack.runs_training_main, lambda t: t.current):
        found = next((t for t in threads if pick(t)), None)
        if found is not None:
            return found
    return threads[0] if threads else None


@dataclass(frozen=True)
class RankStacks:
    """One rank's last dump, and where it ran."""

    rank: int
    node_rank: int
    host: str
    main: ThreadStack | None
    threads: list[ThreadStack] = field(default_factory=list)

    @property
    def frames(self) -> tuple[Frame, ...]:
        return self.main.frames if self.main is not None else ()

    @property
    def training_frame(self) -> Frame | None:
        return next((f for f in self.frames if f.in_training_code), None)

    @property
    def where(self) -> str:
        """The innermost training-code frame, else the innermost frame at all."""
        frame = self.training_frame or (self.frames[0] if self.frames else None)
        return frame.text if frame is not None else "no Python frame"


def read_rank_stacks(nodes: Iterable[NodeOutcome]) -> dict[int, RankStacks]:
    """rank -> its last dump, from every stacks_rank<N>.log below the nodes' log folders;
    a rank whose file is empty (no dump was written) is left out."""
    found: dict[int, RankStacks] = {}
    for node in nodes:
        folder = Path(node.log_dir)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("stacks_rank*.log")):
            match = STACKS_FILE_RE.match(path.name)
            dumps = parse_dumps(path.read_text(encoding="utf-8", errors="replace")) if match else []
            if match and dumps:
                rank = int(match.group(1))
                found[rank] = RankStacks(rank, node.node_rank, node.host, main_thread(dumps[-1]), dumps[-1])
    return found


# A rank standing in one of these waits for the others; of two groups of one size, the rank
# elsewhere (computing, paused in backward) is the one they wait for. The stall watchdog's
# suspect cannot say it: every rank of a hung run stops reporting at about the same time.
_COLLECTIVE_RE = re.compile(r"all_?reduce|barrier|broadcast|all_?gather|reduce_scatter|all_to_all", re.IGNORECASE)


# DDP calls its communication hook from backward as each gradient bucket is ready; the hook
# starts an asynchronous all-reduce and returns at once, so a rank found inside it is not
# waiting for the others but was stopped there (paused, frozen). The rank DDP makes wait for
# it shows no collective at all: the reducer awaits the bucket's future in C++, under `step`.
_STARTS_ASYNC_PATH = "ddp_comm_hooks/"


def _in_collective(stacks: RankStacks) -> bool:
    return any(_COLLECTIVE_RE.search(frame.function) for frame in stacks.frames)


def _waits_for_others(stacks: RankStacks) -> int:
    """0: in a collective that waits; 1: elsewhere; 2: inside a call that never waits."""
    # the path as dumped: `file` keeps folders only below site-packages, and a container may
    # see its packages elsewhere (a mounted environment)
    if any(_STARTS_ASYNC_PATH in frame.path.replace("\\", "/") for frame in stacks.frames):
        return 2
    return 0 if _in_collective(stacks) else 1


def _key(stacks: RankStacks) -> tuple[tuple[str, str, int], ...]:
    return tuple((f.file, f.function, f.line) for f in stacks.frames[:GROUP_DEPTH])


def ranks_text(ranks: list[int]) -> str:
    """'rank 3', 'ranks 0, 2, 3', 'ranks 0-7, 9': runs of three or more as a range."""
    parts: list[str] = []
    ordered = sorted(ranks)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        if end - start >= 2:
            parts.append(f"{ordered[start]}-{ordered[end]}")
        else:
            parts.extend(str(rank) for rank in ordered[start:end + 1])
        start = end + 1
    return ("rank " if len(ordered) == 1 else "ranks ") + ", ".join(parts)


def _group_place(group: StackGroup) -> str:
    innermost = group.frames[0] if group.frames else "no Python frame"
    if group.training_frame and group.training_frame != innermost:
        return f"{innermost} (from {group.training_frame})"
    return innermost


def triage(stacks: dict[int, RankStacks], expected_ranks: Iterable[int], suspects: Iterable[int] = (),
           frozen_nodes: Iterable[int] = ()) -> HangTriage:
    """Group the ranks by where their main threads stood. The biggest group is
    where most ranks wait; among groups of one size, the one with fewer ranks on
    `frozen_nodes` (found paused or stopped: they waited for nobody), then one
    standing in a collective, then one elsewhere, then one inside DDP's hook; then
    the one with fewer of the `suspects` (the ranks the stall watchdog named), then
    the one with the lowest rank. Every rank outside it is an outlier."""
    by_key: dict[tuple[tuple[str, str, int], ...], list[RankStacks]] = {}
    for rank in sorted(stacks):
        by_key.setdefault(_key(stacks[rank]), []).append(stacks[rank])
    suspected, frozen = set(suspects), set(frozen_nodes)
    members = sorted(by_key.values(), key=lambda ranks: (-len(ranks), sum(r.node_rank in frozen for r in ranks),
                                                         _waits_for_others(ranks[0]),
                                                         sum(r.rank in suspected for r in ranks), ranks[0].rank))
    groups = []
    for ranks in members:
        training = Counter(r.training_frame.text for r in ranks if r.training_frame is not None)
        groups.append(StackGroup(ranks=[r.rank for r in ranks], frames=[f.text for f in ranks[0].frames[:GROUP_DEPTH]],
                                 training_frame=training.most_common(1)[0][0] if training else ""))
    outliers = [HangOutlier(rank=r.rank, host=r.host, node_rank=r.node_rank, training_frame=r.where)
                for ranks in members[1:] for r in ranks]
    missing = sorted(set(expected_ranks) - set(stacks))
    hosts = {r.node_rank: r.host for r in stacks.values()}
    frozen_text = [f"node {n} ({hosts[n]})" if n in hosts else f"node {n}" for n in sorted(frozen)]
    result = HangTriage(groups=groups, outliers=sorted(outliers, key=lambda o: o.rank), missing_ranks=missing,
                        frozen_nodes=frozen_text)
    return result.model_copy(update={"summary": "\n".join(triage_lines(result))})


def triage_lines(hang: HangTriage) -> list[str]:
    """The lines that lead a stalled run's failure report: the outliers, where the others wait,
    the nodes found frozen, the ranks without stacks."""
    lines = []
    if hang.outliers:
        lines.append("hung apart from the others: " + "; ".join(
            f"rank {o.rank} ({o.host}) in {o.training_frame}" for o in hang.outliers))
    if len(hang.groups) == 1 and len(hang.groups[0].ranks) > 1:
        group = hang.groups[0]
        with_stacks = " with stacks" if hang.missing_ranks else ""
        lines.append(f"all {len(group.ranks)} ranks{with_stacks} wait in one place: {_group_place(group)}")
    elif hang.groups:
        main = hang.groups[0]
        lines.append(f"{ranks_text(main.ranks)} wait{'s' if len(main.ranks) == 1 else ''} in {_group_place(main)}")
    if hang.frozen_nodes:
        lines.append(f"frozen (paused or stopped) when the stall was found: {', '.join(hang.frozen_nodes)}")
    if hang.missing_ranks:
        lines.append(f"no stacks came back from {ranks_text(hang.missing_ranks)}")
    return lines


def hang_triage(nodes: list[NodeOutcome], world_size: int, suspects: Iterable[int] = (),
                frozen_nodes: Iterable[int] = ()) -> HangTriage:
    """The triage of a stalled run from its collected logs."""
    return triage(read_rank_stacks(nodes), range(world_size), suspects, frozen_nodes)
