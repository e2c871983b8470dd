"""The monitor of a remote host as one long-lived command: its probes run in a
loop on the host, and the controller reads their answers as framed rounds.

A new SSH command per probe per second costs the host a login shell each time
(with a pyenv or conda init, about 0.1 s of CPU); at 32 hosts that starved the
training it was meant to watch. The loop (plain sh) writes, every interval::

    @monitor round
    @monitor probe nvidia-smi
    <its output>
    @monitor exit 0
    @monitor probe proc
    ...
    @monitor end

A probe runs under `timeout` where the host has it (exit 124: timed out), and
ipmitool only every n-th round, never again once it says it is absent (127) or
has no BMC (1). A round cut short by a dropped stream is discarded; the stream
is opened again (harness/backends/node_stream.py) and the next round counts.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping

from harness.backends.transport import CommandResult

PREFIX = "@monitor "
TIMED_OUT = 124  # timeout(1)'s status for a command it stopped

# The first write after the controller closed the session fails; the shell then
# ends its process group (a probe, the pacing sleep) and itself.
_PRELUDE = r"""
trap 'trap - EXIT; kill 0 2>/dev/null' EXIT
trap 'exit 0' PIPE HUP TERM INT
t=; command -v timeout >/dev/null 2>&1 && t="timeout __TIMEOUT__"
n=0 ipmi=1
while :; do
  sleep __INTERVAL__ & pace=$!
  printf '@monitor round\n' || exit 0
"""
_PROBE = r"""  printf '@monitor probe %s\n' __NAME__; $t __ARGV__ 2>&1; printf '\n@monitor exit %s\n' "$?"
"""
_IPMI_PROBE = r"""  if [ "$ipmi" = 1 ] && [ $((n % __EVERY__)) -eq 0 ]; then
    printf '@monitor probe %s\n' __NAME__; $t __ARGV__ 2>&1; rc=$?; printf '\n@monitor exit %s\n' "$rc"
    case $rc in 1|127) ipmi=0;; esac
  fi
"""
_END = r"""  printf '@monitor end\n' || exit 0
  wait $pace; n=$((n + 1))
done
"""


def monitor_script(probes: Mapping[str, tuple[str, ...]], interval_s: float, timeout_s: float,
                   every_nth: Mapping[str, int]) -> str:
    """The loop for `probes` (name -> argv); a probe in `every_nth` runs on every n-th
    round and stops for good after exit 1 or 127 (ipmitool's: no tool, no BMC)."""
    parts = [_PRELUDE.replace("__TIMEOUT__", f"{max(1, round(timeout_s))}")
             .replace("__INTERVAL__", f"{interval_s:g}")]
    for name, argv in probes.items():
        block = _IPMI_PROBE.replace("__EVERY__", str(every_nth[name])) if name in every_nth else _PROBE
        parts.append(block.replace("__NAME__", shlex.quote(name)).replace("__ARGV__", shlex.join(argv)))
    parts.append(_END)
    return "".join(parts)


def monitor_argv(probes: Mapping[str, tuple[str, ...]], interval_s: float, timeout_s: float,
                 every_nth: Mapping[str, int]) -> list[str]:
    return ["sh", "-c", monitor_script(probes, interval_s, timeout_s, every_nth), "monitor"]


class RoundParser:
    """Turns the stream's lines into rounds: `on_round(timestamp_ms, answers)` at each
    round's end, the timestamp taken (from `clock`) when the round began to arrive.
    Lines outside a round (a login banner) are ignored."""

    def __init__(self, host: str, probes: Mapping[str, tuple[str, ...]],
                 on_round: Callable[[int, dict[str, CommandResult]], None], clock: Callable[[], float]) -> None:
        self._host = host
        self._probes = probes
        self._on_round = on_round
        self._clock = clock
        self._answers: dict[str, CommandResult] | None = None
        self._timestamp_ms = 0
        self._probe: str | None = None
        self._lines: list[str] = []

    def feed(self, line: str) -> None:
        if line == PREFIX + "round":
            self._answers, self._probe = {}, None
            self._timestamp_ms = int(self._clock() * 1000)
        elif self._answers is None:
            return
        elif line.startswith(PREFIX + "probe "):
            self._probe, self._lines = line[len(PREFIX + "probe "):], []
        elif line.startswith(PREFIX + "exit ") and self._probe is not None:
            self._answers[self._probe] = self._answer(self._probe, line[len(PREFIX + "exit "):].strip())
            self._probe = None
        elif line == PREFIX + "end":
            answers, self._answers = self._answers, None
            self._on_round(self._timestamp_ms, answers)
        elif self._probe is not None:
            self._lines.append(line)

    def _answer(self, probe: str, status: str) -> CommandResult:
        lines = self._lines[:-1] if self._lines and not self._lines[-1] else self._lines  # the frame's own newline
        code = int(status) if status.isdigit() else 1
        return CommandResult(self._host, list(self._probes.get(probe, (probe,))),
                             None if code == TIMED_OUT else code, "\n".join(lines) + ("\n" if lines else ""))
