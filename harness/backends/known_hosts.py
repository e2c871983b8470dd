"""known_hosts, read leniently and only ever appended to, under a lock.

Used by harness/backends/ssh.py: host keys are verified against the inventory's
known_hosts; an unknown key is added only when the inventory opts in
(accept_unknown_host_keys), and then exactly its line is appended.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, HostKeys


def _same_key(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


# ---------------------------------------------------------------------------------- known_hosts


class HostKeyRejected(paramiko.SSHException):
    """The host presented a key that known_hosts does not allow (unknown, or @revoked)."""


def _parse_entry(fields: list[str]) -> HostKeyEntry | None:
    if len(fields) < 3:
        return None
    try:
        return HostKeyEntry.from_line(" ".join(fields[:3]))
    except Exception:  # any line paramiko chokes on is skipped, never fatal
        return None


class KnownHostsFile:
    """An OpenSSH known_hosts file, read leniently and only ever appended to.

    Lines paramiko cannot use (comments, @cert-authority, key types it does not
    know such as sk-ssh-ed25519@openssh.com, garbage) are skipped when reading
    and left as they are in the file. Keys on @revoked lines are never accepted,
    for any host. add() appends one line under an exclusive flock on
    `<file>.lock`, after reading the file again under that lock, so parallel
    connections (threads or processes) save each new key exactly once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def read(self) -> tuple[list[HostKeyEntry], list[paramiko.PKey]]:
        """(usable entries, revoked keys). A missing file is empty."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return [], []
        entries: list[HostKeyEntry] = []
        revoked: list[paramiko.PKey] = []
        for line in text.splitlines():
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = None
            if fields[0].startswith("@"):
                marker, fields = fields[0], fields[1:]
            entry = _parse_entry(fields)
            if entry is None:
                continue
            if marker is None:
                entries.append(entry)
            elif marker == "@revoked":
                revoked.append(entry.key)
            # @cert-authority: paramiko cannot verify host certificates; the line stays, unused.
        return entries, revoked

    def load_into(self, keys: HostKeys) -> list[paramiko.PKey]:
        """Add every usable, unrevoked key to `keys`; returns the revoked keys."""
        entries, revoked = self.read()
        for entry in entries:
            if any(_same_key(entry.key, bad) for bad in revoked):
                continue
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
        return revoked

    def add(self, hostname: str, key: paramiko.PKey) -> bool:
        """Append `hostname key` unless the file holds it already; True when appended.

        Raises paramiko.BadHostKeyException when the file meanwhile holds another
        key of that type for the host, HostKeyRejected when the key is revoked."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as lock:  # "a": create, never truncate
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            keys = HostKeys()
            revoked = self.load_into(keys)
            if any(_same_key(key, bad) for bad in revoked):
                raise HostKeyRejected(f"the host key of {hostname} is marked @revoked in {self.path}")
            if keys.check(hostname, key):
                return False
            known = keys.lookup(hostname)
            if known is not None and key.get_name() in known:
                raise paramiko.BadHostKeyException(hostname, key, known[key.get_name()])
            line = f"{hostname} {key.get_name()} {key.get_base64()}\n".encode()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # the last line had no newline: do not glue onto it
                while line:
                    line = line[os.write(fd, line):]
                os.fsync(fd)
            finally:
                os.close(fd)
            return True


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko for a host none of whose keys known_hosts holds."""

    def __init__(self, known: KnownHostsFile, revoked: list[paramiko.PKey], accept: bool) -> None:
        self.known = known
        self.revoked = revoked
        self.accept = accept

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if any(_same_key(key, bad) for bad in self.revoked):
            raise HostKeyRejected(f"the host key of {hostname} is marked @revoked in {self.known.path}")
        if not self.accept:
            raise HostKeyRejected(f"Server {hostname!r} not found in known_hosts")
        self.known.add(hostname, key)
