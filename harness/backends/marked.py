"""Commands whose answer is read between markers they print themselves.

Over SSH a command passes through the user's shell, and a site's start-up
files print around it: banners, MOTDs, `module` messages, pyenv complaints, on
stdout and on stderr, before the command and at exit. The transports merge
both streams, so that text would be read as the command's answer.

run_marked() runs argv under a small POSIX sh wrapper that captures the
command's stdout and stderr (together, in order), and only once it has ended
prints a begin marker, that output and an end marker in one go, then exits
with the command's status. Each call has its own random nonce in its markers,
so nothing a shell prints can pose as one. Printing the answer only at the end,
with one printf, keeps the shell's lines outside the markers even though stdout
and stderr travel apart and are merged as they arrive: what the shell printed
before the command is sent ahead of the answer or right after it, never inside
it; what it prints at exit comes after the end marker. (Text printed by the
command's own process tree, e.g. a bash script that reads BASH_ENV, is the
command's answer; no marker can tell it apart.)

The answer is whole or absent: a command cut off by its timeout printed
nothing (the wrapper prints only at the end), so its result has no output.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Sequence

from harness.backends.transport import CommandResult, Transport
from harness.errors import HarnessError

# sh -c WRAPPER sh BEGIN END argv...: the command's output is held until it ends
# ($(...) drops trailing newlines; one is put back when read), then printed
# between the markers with one printf, and its exit status passed on.
WRAPPER = 'b=$1; e=$2; shift 2; out=$("$@" 2>&1); rc=$?; printf "%s\\n%s\\n%s\\n" "$b" "$out" "$e"; exit "$rc"'
_PREFIX = ["sh", "-c", WRAPPER, "sh"]


class UnmarkedAnswer(HarnessError):
    """The command ended but printed no answer between its markers: the host's
    shell could not run the wrapper (no `sh`, killed). `output` holds what the
    shell printed; the message leaves it out, it is not the command's."""

    def __init__(self, host: str, argv: list[str], exit_code: int, output: str) -> None:
        self.host = host
        self.argv = argv
        self.remote_exit_code = exit_code
        self.output = output
        super().__init__(f"{host}: `{' '.join(argv)[:200]}` exited {exit_code} without printing its answer "
                         "between its markers (the host's shell did not run it)")


def markers(nonce: str) -> tuple[str, str]:
    return f"@@harness-begin-{nonce}@@", f"@@harness-end-{nonce}@@"


def marked_argv(argv: Sequence[str], nonce: str) -> list[str]:
    """argv wrapped so that its answer is printed between the nonce's markers."""
    begin, end = markers(nonce)
    return [*_PREFIX, begin, end, *argv]


def inner_argv(argv: Sequence[str]) -> list[str] | None:
    """The command a marked_argv() wraps; None when argv is not one (for test
    doubles and logs that want the probe itself)."""
    if list(argv[: len(_PREFIX)]) != _PREFIX or len(argv) < len(_PREFIX) + 2:
        return None
    return list(argv[len(_PREFIX) + 2:])


def read_marked(output: str, nonce: str) -> str | None:
    """What lies between the nonce's markers in `output` (with a final newline
    when not empty), or None when both markers are not there in order."""
    begin, end = markers(nonce)
    start = output.find(begin)
    if start < 0:
        return None
    start += len(begin)
    stop = output.find(end, start)
    if stop < 0:
        return None
    answer = output[start:stop]
    answer = answer.removeprefix("\n").removesuffix("\n")
    return answer + "\n" if answer else ""


def run_marked(transport: Transport, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
    """transport.run(argv) with only the command's own output in the result
    (its `argv` is argv, unwrapped) and its exit status. Timed out: exit_code
    None and no output. Raises UnmarkedAnswer when the command ended without
    printing its markers, and whatever transport.run raises."""
    nonce = secrets.token_hex(8)
    result = transport.run(marked_argv(argv, nonce), timeout=timeout, stdin=stdin)
    answer = read_marked(result.output, nonce)
    if result.exit_code is None:
        return CommandResult(result.host, list(argv), None, answer or "")
    if answer is None:
        raise UnmarkedAnswer(result.host, list(argv), result.exit_code, result.output)
    return CommandResult(result.host, list(argv), result.exit_code, answer)


# A batch: several marked commands in one shell, one after the other, each
# followed by its exit status behind a marker of its own nonce. One round trip
# instead of one per command; the answers are read exactly as run_marked reads one.
_BATCH_HEAD = "# harness marked batch"


def _rc_marker(nonce: str) -> str:
    return f"@@harness-rc-{nonce}@@"


def batch_argv(commands: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """`sh -c SCRIPT` running each (nonce, argv) marked, in order."""
    lines = [_BATCH_HEAD]
    for nonce, argv in commands:
        wrapped = " ".join(shlex.quote(part) for part in marked_argv(argv, nonce))
        lines.append(f"{wrapped}; printf '%s %s\\n' {shlex.quote(_rc_marker(nonce))} \"$?\"")
    return ["sh", "-c", "\n".join(lines)]


def batch_commands(argv: Sequence[str]) -> list[tuple[str, list[str]]] | None:
    """The (nonce, argv) a batch_argv() runs; None when argv is not one (for test doubles)."""
    if len(argv) != 3 or list(argv[:2]) != ["sh", "-c"] or not argv[2].startswith(_BATCH_HEAD):
        return None
    found: list[tuple[str, list[str]]] = []
    for line in argv[2].splitlines()[1:]:
        words = shlex.split(line.rsplit("; printf", 1)[0])
        inner = inner_argv(words)
        nonce = words[len(_PREFIX)].removeprefix("@@harness-begin-").removesuffix("@@")
        if inner is not None:
            found.append((nonce, inner))
    return found


def batch_answer(nonce: str, answer: CommandResult) -> str:
    """What one command of a batch prints: its marked output, then its status (for test doubles)."""
    return f"{answer.output}\n{_rc_marker(nonce)} {answer.exit_code}\n"


def run_marked_batch(transport: Transport, commands: Sequence[Sequence[str]],
                     timeout: float) -> list[CommandResult | None]:
    """run_marked for each command, all in one round trip. A command with no
    answer (the batch timed out before it ended, or the shell did not run it)
    is None: the caller may run it alone. Raises what transport.run raises."""
    nonces = [secrets.token_hex(8) for _ in commands]
    result = transport.run(batch_argv(list(zip(nonces, commands))), timeout=timeout)
    answers: list[CommandResult | None] = []
    for nonce, argv in zip(nonces, commands):
        answer = read_marked(result.output, nonce)
        status = re.search(re.escape(_rc_marker(nonce)) + r" (\d+)", result.output)
        answers.append(None if answer is None or status is None
                       else CommandResult(result.host, list(argv), int(status.group(1)), answer))
    return answers
