"""Typed errors. UserError and its children end the CLI with one line and exit 2."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 1


class UserError(HarnessError):
    """Bad input: a file, a field, a value. Exit status 2, no traceback."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.file = file
        self.field = field
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class HostUnreachable(UserError):
    """A host in the inventory cannot be reached or fails a preflight check.

    `host` names it when the host itself is at fault (None: a key or login the
    user must fix), and `code` is the fault code it earns (harness/faults/codes.py);
    None there means it did not answer: BENCH-H01 before a run starts, BENCH-H02
    after (harness/faults/attribute.py decides)."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 host: str | None = None, code: str | None = None) -> None:
        super().__init__(message, file=file, field=field)
        self.host = host
        self.code = code


class RemoteCommandError(HarnessError):
    """A command on a host exited non-zero or timed out."""

    def __init__(self, host: str, argv: list[str], exit_code: int | None, output: str) -> None:
        self.host = host
        self.argv = argv
        self.remote_exit_code = exit_code
        self.output = output
        status = "timed out" if exit_code is None else f"exited {exit_code}"
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(f"{host}: `{' '.join(argv)}` {status}\n{tail}")


class HostsNotReady(UserError):
    """A preflight check found these hosts unfit, each earning `code` (harness/faults/codes.py);
    `hosts` maps each to what was found there."""

    def __init__(self, message: str, *, hosts: dict[str, str], code: str, file: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, file=file, field=field)
        self.hosts = hosts
        self.code = code


class ConnectionLost(HostUnreachable):
    """The connection to a host dropped, or the host stopped answering, during a
    call: what that call did on the host is unknown. Unlike RemoteCommandError
    (the command ran and failed), this is the host or the network failing.
    Not bad input: a run that meets it has started (exit status 1)."""

    exit_code = 1


class RemoteTimeout(RemoteCommandError):
    """A command was started and did not finish within its timeout (exit_code None);
    `output` holds what it printed until then."""


class RunFailed(HarnessError):
    """The training job ran but did not finish successfully."""


class HostFault(RunFailed):
    """A step of a started run failed on these hosts, each earning `code` (a fault
    code of harness/faults/codes.py): the image copy or load on a host (BENCH-I01)."""

    def __init__(self, message: str, hosts: list[str], code: str) -> None:
        super().__init__(message)
        self.hosts = hosts
        self.code = code
