"""The watchdog that bounds every SSH request: a call that sees no progress for
its limit gets the connection closed, which releases every paramiko call
blocked on it (harness/backends/ssh.py), and the SFTP session it guards."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paramiko


class Watchdog:
    """Closes an SSH connection when, while armed, the call it guards sees no
    progress for `limit` seconds: every paramiko call blocked on that
    connection then returns (with an error) at once."""

    def __init__(self, transport: paramiko.Transport, limit: float) -> None:
        self._transport = transport
        self.limit = limit
        self.fired = False
        self._since: float | None = time.monotonic()
        self._done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._watch, name="ssh-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._cond:
            self._done = True
            self._cond.notify()
        self._thread.join()

    def arm(self) -> None:
        with self._cond:
            self._since = time.monotonic()
            self._cond.notify()

    def kick(self, *_progress: object) -> None:
        """Progress while armed: the countdown starts again (a paramiko callback fits)."""
        if self._since is not None:
            self._since = time.monotonic()

    def disarm(self) -> None:
        with self._cond:
            self._since = None
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._done:
                if self._since is None:
                    self._cond.wait()
                    continue
                left = self._since + self.limit - time.monotonic()
                if left <= 0:
                    self.fired = True
                    break
                self._cond.wait(left)
        if self.fired:
            self._transport.close()


@dataclass
class SftpSession:
    sftp: paramiko.SFTPClient
    dog: Watchdog
    transport: paramiko.Transport

    def healthy(self) -> bool:
        return not self.dog.fired and self.transport.is_active()
