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

import secrets
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
