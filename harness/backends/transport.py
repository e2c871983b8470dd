"""How the controller runs a command or moves a file on one host.

Two implementations: LocalTransport (subprocess, for the controller's own
machine) and SshTransport (paramiko, harness/backends/ssh.py). Commands are argv lists;
SshTransport quotes every argument with shlex.quote.

What a caller can tell apart:
- the command finished: `CommandResult.exit_code` is its exit status (`check()`
  raises RemoteCommandError when it is not 0);
- the command ran past its timeout: `exit_code` is None, `timed_out`/`partial`
  are true and `output` holds what it printed until then (`check()` raises
  RemoteTimeout, a RemoteCommandError);
- the host or the connection failed: the call raises HostUnreachable (could not
  connect) or its subclass ConnectionLost (dropped or stopped answering during
  the call; what the command did is unknown).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import RemoteCommandError, RemoteTimeout

# run_to_file keeps the whole output in its file and this much of its end in `output`.
TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: list[str]
    exit_code: int | None  # None: timed out (output holds what came until then)
    output: str  # stdout and stderr, interleaved as they came; run_to_file: the last TAIL_BYTES
    output_file: Path | None = None  # run_to_file: the whole output, written as it arrived

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None

    @property
    def partial(self) -> bool:
        """The output stops where the timeout cut the command off."""
        return self.exit_code is None

    def check(self) -> "CommandResult":
        if self.exit_code is None:
            raise RemoteTimeout(self.host, self.argv, None, self.output)
        if self.exit_code != 0:
            raise RemoteCommandError(self.host, self.argv, self.exit_code, self.output)
        return self


class FetchedFiles(list[Path]):
    """get_tree's answer: the files written (a list of paths, sorted) and, in
    `skipped`, one 'path: reason' for each remote entry that was not copied
    (unreadable, vanished meanwhile, not a regular file)."""

    def __init__(self, files: list[Path] | None = None, skipped: list[str] | None = None) -> None:
        super().__init__(sorted(files or []))
        self.skipped: list[str] = list(skipped or [])


def remove_tree_argv(path: str) -> list[str]:
    """The command that removes a folder on a host, whatever it holds ("--": a path is never an option)."""
    return ["rm", "-rf", "--", path]


def remove_empty_dirs_argv(*paths: str) -> list[str]:
    """The command that removes these folders, in order, each only if it is empty
    (a folder holding anything stays, and that is no error)."""
    return ["sh", "-c", 'for dir in "$@"; do rmdir -- "$dir" 2>/dev/null; done; exit 0', "sh", *paths]


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a file as text (from a line start when it was cut)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return ""
    if size > limit and b"\n" in data:
        data = data[data.index(b"\n") + 1:]
    return data.decode("utf-8", "replace")


STREAM_POLL_S = 0.2  # how often a stream's reader looks at its stop flag


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """End a streamed command and whatever it started (its own session)."""
    if proc.poll() is None:
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
    if proc.stdout is not None:
        proc.stdout.close()


class Transport(ABC):
    host: str

    @abstractmethod
    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        """Run argv to completion (or timeout), output drained as it comes."""

    def run_to_file(self, argv: list[str], dest: Path, timeout: float, stdin: bytes | None = None) -> CommandResult:
        """Run argv with its output (stdout and stderr interleaved) written to
        `dest` as it arrives, not held in memory. On timeout the file keeps what
        arrived and the result is `partial` (exit_code None). `output` is the
        file's last TAIL_BYTES; `output_file` is `dest`. A transport failure
        raises as in run(); the file then holds what arrived before it.

        This default runs run() and writes its output; the real transports stream."""
        result = self.run(argv, timeout=timeout, stdin=stdin)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(result.output.encode("utf-8"))
        return CommandResult(result.host, result.argv, result.exit_code, read_tail(dest), output_file=dest)

    def stream(self, argv: list[str], on_data: Callable[[bytes], None], stop: threading.Event) -> int | None:
        """Run a long-lived argv, its output handed to on_data as it arrives, until
        it ends (its exit status) or `stop` is set (the command is ended; None).
        A transport failure raises as in run()."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream a command")

    @abstractmethod
    def put_tree(self, local: Path, remote: str) -> None:
        """Copy a local directory to `remote` (created, contents replaced)."""

    @abstractmethod
    def get_tree(self, remote: str, local: Path) -> FetchedFiles:
        """Copy a remote directory's files under `local`; returns the files written
        and, in `skipped`, what was not copied."""

    def close(self) -> None:
        return None


class LocalTransport(Transport):
    def __init__(self, host: str = "localhost") -> None:
        self.host = host

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or b""
            return CommandResult(self.host, argv, None, out.decode("utf-8", "replace"))
        except FileNotFoundError as exc:
            return CommandResult(self.host, argv, 127, f"{argv[0]}: {exc.strerror}")
        return CommandResult(self.host, argv, proc.returncode, proc.stdout.decode("utf-8", "replace"))

    def run_to_file(self, argv: list[str], dest: Path, timeout: float, stdin: bytes | None = None) -> CommandResult:
        dest.parent.mkdir(parents=True, exist_ok=True)
        exit_code: int | None
        with dest.open("wb") as out:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT)
            except FileNotFoundError as exc:
                out.write(f"{argv[0]}: {exc.strerror}".encode())
                exit_code = 127
            else:
                try:
                    proc.communicate(stdin, timeout=timeout)
                    exit_code = proc.returncode
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    exit_code = None
        return CommandResult(self.host, argv, exit_code, read_tail(dest), output_file=dest)

    def stream(self, argv: list[str], on_data: Callable[[bytes], None], stop: threading.Event) -> int | None:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except FileNotFoundError as exc:
            on_data(f"{argv[0]}: {exc.strerror}\n".encode())
            return 127
        assert proc.stdout is not None
        try:
            while not stop.is_set():
                readable, _, _ = select.select([proc.stdout], [], [], STREAM_POLL_S)
                if readable:
                    data = os.read(proc.stdout.fileno(), 65536)
                    if not data:
                        return proc.wait()
                    on_data(data)
            return None
        finally:
            _end_group(proc)

    def put_tree(self, local: Path, remote: str) -> None:
        target = Path(remote)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(local, target)

    def get_tree(self, remote: str, local: Path) -> FetchedFiles:
        source = Path(remote)
        written: list[Path] = []
        skipped: list[str] = []
        if not source.is_dir():
            return FetchedFiles()
        for path in sorted(source.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                continue
            if not path.is_file() or path.is_symlink():
                skipped.append(f"{path}: not a regular file")
                continue
            dest = local / path.relative_to(source)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
            except OSError as exc:
                skipped.append(f"{path}: {exc.strerror or exc}")
                continue
            written.append(dest)
        return FetchedFiles(written, skipped)
