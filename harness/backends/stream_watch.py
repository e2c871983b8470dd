"""Listening to a run: one long-lived command per node, over one SSH session.

The command (watch_script(), plain sh on the host) writes two kinds of line:
- `@state <answer>` (the payload's state() shell function: docker inspect's
  answer, or a process group's) every HEARTBEAT_S, and at once when the
  payload's await() returns, so an exit is heard the moment it happens while a
  frozen engine (no answer within its 10 s) or a silent host shows as silence;
- `@event <line>` for every line appended to the node's rank event logs
  (`tail -F`: files that appear later are followed too).
Anything else (a login shell's banner, a MOTD) is ignored.

The controller keeps no per-interval SSH session: it reads what the streams
said. A stream that drops is reopened (harness/backends/node_stream.py); until
it is heard again the node counts as silent for the lost-host rule.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cases.protocol import event_file_name
from harness.backends.node_stream import NodeStream
from harness.backends.transport import Transport
from harness.core.backend import NodeState, NodeWatch
from harness.core.events import Event, parse_lines
from harness.core.plan import NodePlan

HEARTBEAT_S = 3.0  # the host reports its container's state this often (and at once on exit)
INSPECT_TIMEOUT_S = 10  # a docker inspect that takes longer is the engine saying nothing
# Heard nothing for this long: the host (or its engine) is silent.
SILENT_S = HEARTBEAT_S + INSPECT_TIMEOUT_S + 5.0
STATE_PREFIX = "@state "
EVENT_PREFIX = "@event "

# $1 heartbeat seconds, $2 log folder, $3 event file names; the rest: the payload's arguments
# (its state() and await() functions read them). The first write after the controller closed
# the session fails; the shell then ends its whole process group (tail, await). tail --pid
# covers a shell that was killed outright.
_PRELUDE = r"""
beat=$1 dir=$2 files=$3; shift 3
trap 'trap - EXIT; kill 0 2>/dev/null' EXIT
trap 'exit 0' PIPE HUP TERM INT
t=; command -v timeout >/dev/null 2>&1 && t="timeout __INSPECT__"
pid=; tail --pid=$$ -n 0 /dev/null >/dev/null 2>&1 && pid="--pid=$$"
"""
_LOOP = r"""
report() { printf '@state %s\n' "$(state "$@" 2>&1 | tr '\n' ' ')"; }
( cd "$dir" 2>/dev/null && exec tail -q -n 1 -F $pid $files 2>/dev/null
) | while IFS= read -r line; do printf '@event %s\n' "$line" || exit 0; done &
( await "$@" >/dev/null 2>&1; report "$@" ) &
while :; do report "$@" || exit 0; sleep "$beat"; done
"""


def watch_script(functions: str) -> str:
    """The watch command for a payload whose shell `functions` define state() (one
    answer: `state=<status> exit=<code>`, or why there is none) and await() (returns
    when the workload ended). Both get the payload's arguments; $t is `timeout N`
    where the host has it."""
    return (_PRELUDE + functions + _LOOP).replace("__INSPECT__", str(INSPECT_TIMEOUT_S))


def watch_argv(script: str, run_id: str, node: NodePlan, nproc_per_node: int, payload_args: list[str],
               heartbeat_s: float = HEARTBEAT_S) -> list[str]:
    files = " ".join(event_file_name(rank) for rank in node_ranks_of(node, nproc_per_node))
    # $0 names the watcher in the host's process list (and lets a test find it).
    return ["sh", "-c", script, f"bench-watch-{run_id}", f"{heartbeat_s:g}", node.host_log_dir, files,
            *payload_args]


def node_ranks_of(node: NodePlan, nproc_per_node: int) -> range:
    """The global ranks a node runs."""
    return range(node.node_rank * nproc_per_node, (node.node_rank + 1) * nproc_per_node)


@dataclass
class _Heard:
    state: NodeState | None = None
    state_at: float = 0.0  # when the last answer the engine gave (not a failed inspect) came


StateParser = Callable[[int, str], NodeState]
_STATE_RE = re.compile(r"state=(\w+) exit=(-?\d+)")


def parse_answer(node_rank: int, text: str, running: tuple[str, ...], gone: tuple[str, ...], what: str) -> NodeState:
    """A node's state from one `state=<status> exit=<code>` answer: a status in
    `running` is running, another one exited; an answer holding one of `gone`'s
    markers says the workload does not exist; anything else is no answer (`what`
    names the probe)."""
    match = _STATE_RE.search(text)
    if match is None:
        if any(marker in text for marker in gone):
            return NodeState(node_rank, "gone", detail="not found: " + text.strip())
        return NodeState(node_rank, "unreachable", detail=f"{what}: no answer {text.strip()[-200:]}".strip())
    status, code = match.group(1), match.group(2)
    if status in running:
        return NodeState(node_rank, "running", detail=status)
    return NodeState(node_rank, "exited", int(code), status)


class StreamWatch(NodeWatch):
    """Watches these nodes, each through its transport running its watch argv; each
    `@state` answer is read by `parse_state`."""

    def __init__(self, nproc_per_node: int, nodes: list[tuple[NodePlan, Transport, list[str]]],
                 parse_state: StateParser, silent_s: float = SILENT_S) -> None:
        self._parse_state = parse_state
        self._silent_s = silent_s
        self._changed = threading.Condition()
        self._lock = threading.Lock()
        self._heard: dict[int, _Heard] = {node.node_rank: _Heard() for node, _, _ in nodes}
        self._events: dict[int, Event] = {}
        self._notes: list[str] = []
        self._ranks_of = {node.node_rank: set(node_ranks_of(node, nproc_per_node)) for node, _, _ in nodes}
        self._opened = time.monotonic()
        self._streams = {
            node.node_rank: NodeStream(f"{node.host.name}'s watch", transport, argv,
                                       on_line=functools.partial(self._on_line, node.node_rank),
                                       on_change=self._stream_changed)
            for node, transport, argv in nodes}
        for stream in self._streams.values():
            stream.start()

    def reopened(self) -> dict[int, int]:
        """Node rank -> how often its stream was opened again."""
        return {rank: stream.status().reopened for rank, stream in self._streams.items()}

    def notes(self) -> list[str]:
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def _stream_changed(self, note: str) -> None:
        with self._lock:
            self._notes.append(note)
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _on_line(self, node_rank: int, line: str) -> None:
        if line.startswith(STATE_PREFIX):
            state = self._parse_state(node_rank, line[len(STATE_PREFIX):])
            with self._lock:
                heard = self._heard[node_rank]
                changed = heard.state is None or (state.status, state.exit_code) != (heard.state.status,
                                                                                     heard.state.exit_code)
                heard.state = state
                if state.status != "unreachable":
                    heard.state_at = time.monotonic()
            if changed:
                self._notify()
        elif line.startswith(EVENT_PREFIX):
            for event in parse_lines([line[len(EVENT_PREFIX):]]):
                with self._lock:
                    self._events[event.rank] = event

    def states(self) -> list[NodeState]:
        now = time.monotonic()
        states = []
        with self._lock:
            heard = {rank: (h.state, h.state_at) for rank, h in self._heard.items()}
        for rank, (state, state_at) in heard.items():
            status = self._streams[rank].status()
            answered_at = state_at or self._opened
            if now - status.last_heard >= self._silent_s or not status.up:
                why = status.why_down if not status.up else f"nothing heard for {now - status.last_heard:.0f} s"
                states.append(NodeState(rank, "unreachable", detail=why, silent_since=answered_at))
            elif state is None:  # launched a moment ago, the first answer is on its way
                states.append(NodeState(rank, "running", detail="starting"))
            elif state.status == "unreachable":  # the host answers, its engine does not
                states.append(NodeState(rank, "unreachable", detail=state.detail, silent_since=answered_at))
            else:
                states.append(state)
        return states

    def events(self, node_ranks: list[int]) -> dict[int, Event]:
        wanted = set().union(*(self._ranks_of.get(rank, set()) for rank in node_ranks))
        with self._lock:
            return {rank: event for rank, event in self._events.items() if rank in wanted}

    def wait(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def close(self) -> None:
        for stream in self._streams.values():
            stream.stop_soon()
        for stream in self._streams.values():
            stream.close()
