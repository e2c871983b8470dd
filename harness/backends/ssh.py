"""SshTransport: commands and files on a remote host over paramiko.

Host keys are checked against the inventory's known_hosts; an unknown key is
rejected unless the inventory sets accept_unknown_host_keys, in which case it
is added and saved. stdout and stderr are merged on the channel so one reader
drains both (two full pipes deadlock paramiko otherwise).
"""

from __future__ import annotations

import shlex
import socket
import stat
import threading
import time
from pathlib import Path, PurePosixPath

import paramiko

from harness.backends.transport import CommandResult, Transport
from harness.core.inventory import Cluster, Host
from harness.errors import HostUnreachable

KEEPALIVE_S = 15
_READ_CHUNK = 32768


def quote_argv(argv: list[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in argv)


class SshTransport(Transport):
    def __init__(self, host: Host, cluster: Cluster) -> None:
        self.host = host.name
        self._spec = host
        self._cluster = cluster
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _connect(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                return self._client
            client = paramiko.SSHClient()
            known_hosts = Path(self._cluster.known_hosts)
            if known_hosts.is_file():
                client.load_host_keys(str(known_hosts))
            if self._cluster.accept_unknown_host_keys:
                known_hosts.parent.mkdir(parents=True, exist_ok=True)
                known_hosts.touch(exist_ok=True)
                client.load_host_keys(str(known_hosts))  # save_host_keys writes this set
                client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            else:
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            where = f"{self._spec.user}@{self._spec.address}:{self._spec.port}"
            try:
                client.connect(
                    self._spec.address,
                    port=self._spec.port,
                    username=self._spec.user,
                    key_filename=self._spec.key,
                    timeout=self._cluster.ssh_timeout_s,
                    banner_timeout=self._cluster.ssh_timeout_s,
                    auth_timeout=self._cluster.ssh_timeout_s,
                    allow_agent=self._spec.key is None,
                    look_for_keys=self._spec.key is None,
                )
            except paramiko.BadHostKeyException as exc:
                raise HostUnreachable(
                    f"host key of {where} does not match known_hosts ({exc})",
                    file=self._cluster.known_hosts,
                    field=f"hosts.{self.host}",
                ) from exc
            except paramiko.SSHException as exc:
                hint = ""
                if "not found in known_hosts" in str(exc):
                    hint = (" (add it with ssh-keyscan, or set cluster.accept_unknown_host_keys: true"
                            " to accept and save it)")
                raise HostUnreachable(
                    f"ssh to {where} failed: {exc}{hint}", field=f"hosts.{self.host}"
                ) from exc
            except (OSError, socket.timeout) as exc:
                raise HostUnreachable(
                    f"cannot reach {where}: {exc}", field=f"hosts.{self.host}"
                ) from exc
            if self._cluster.accept_unknown_host_keys:
                client.save_host_keys(str(known_hosts))
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(KEEPALIVE_S)
            self._client = client
            return client

    def connect(self) -> None:
        self._connect()

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        client = self._connect()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(f"ssh connection to {self.host} was lost", field=f"hosts.{self.host}")
        channel = transport.open_session(timeout=self._cluster.ssh_timeout_s)
        channel.set_combine_stderr(True)
        channel.settimeout(0.2)
        channel.exec_command(quote_argv(argv))
        if stdin is not None:
            channel.sendall(stdin)
        channel.shutdown_write()
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        timed_out = False
        while True:
            try:
                data = channel.recv(_READ_CHUNK)
                if not data:
                    break
                chunks.append(data)
            except socket.timeout:
                pass
            if time.monotonic() > deadline:
                timed_out = True
                break
        exit_code: int | None = None
        if not timed_out:
            exit_code = channel.recv_exit_status()
        channel.close()
        return CommandResult(self.host, argv, exit_code, b"".join(chunks).decode("utf-8", "replace"))

    def put_tree(self, local: Path, remote: str) -> None:
        self.run(["rm", "-rf", "--", remote], timeout=60).check()
        self.run(["mkdir", "-p", "--", remote], timeout=30).check()
        sftp = self._connect().open_sftp()
        try:
            for path in sorted(local.rglob("*")):
                target = str(PurePosixPath(remote) / path.relative_to(local).as_posix())
                if path.is_dir():
                    sftp.mkdir(target)
                elif path.is_file():
                    sftp.put(str(path), target)
                    sftp.chmod(target, path.stat().st_mode & 0o777)
        finally:
            sftp.close()

    def get_tree(self, remote: str, local: Path) -> list[Path]:
        sftp = self._connect().open_sftp()
        written: list[Path] = []
        try:
            try:
                sftp.stat(remote)
            except FileNotFoundError:
                return written
            pending = [PurePosixPath(remote)]
            while pending:
                folder = pending.pop()
                for entry in sftp.listdir_attr(str(folder)):
                    remote_path = folder / entry.filename
                    mode = entry.st_mode or 0
                    if stat.S_ISDIR(mode):
                        pending.append(remote_path)
                    elif stat.S_ISREG(mode):
                        dest = local / remote_path.relative_to(remote)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        sftp.get(str(remote_path), str(dest))
                        written.append(dest)
        finally:
            sftp.close()
        return sorted(written)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def open_transport(host: Host, cluster: Cluster) -> Transport:
    if host.transport == "local":
        from harness.backends.transport import LocalTransport

        return LocalTransport(host.name)
    return SshTransport(host, cluster)
