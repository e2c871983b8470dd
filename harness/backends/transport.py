"""How the controller runs a command or moves a file on one host.

Two implementations: LocalTransport (subprocess, for the controller's own
machine) and SshTransport (paramiko, harness/backends/ssh.py). Commands are argv lists;
SshTransport quotes every argument with shlex.quote.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from harness.errors import RemoteCommandError


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: list[str]
    exit_code: int | None  # None: timed out
    output: str  # stdout and stderr, interleaved as they came

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> "CommandResult":
        if not self.ok:
            raise RemoteCommandError(self.host, self.argv, self.exit_code, self.output)
        return self


class Transport(ABC):
    host: str

    @abstractmethod
    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        """Run argv to completion (or timeout), output drained as it comes."""

    @abstractmethod
    def put_tree(self, local: Path, remote: str) -> None:
        """Copy a local directory to `remote` (created, contents replaced)."""

    @abstractmethod
    def get_tree(self, remote: str, local: Path) -> list[Path]:
        """Copy a remote directory's files under `local`; returns the files written."""

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

    def put_tree(self, local: Path, remote: str) -> None:
        import shutil

        target = Path(remote)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(local, target)

    def get_tree(self, remote: str, local: Path) -> list[Path]:
        import shutil

        source = Path(remote)
        written: list[Path] = []
        if not source.is_dir():
            return written
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.is_symlink():
                dest = local / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                written.append(dest)
        return written
