"""SshTransport: commands and files on a remote host over paramiko, made to last a night.

Connections. One SSH connection per SshTransport, shared by its threads and
opened on first use. A connection found dropped is opened again, retrying with
exponential backoff for `reconnect_window_s` (the very first connection:
`connect_window_s`), then HostUnreachable. A command is never sent twice: only
a call that found the connection dead before sending its command retries.

Opening one connection (socket tuning, host-key check, which failures are
worth a retry) is harness/backends/ssh_connect.py.

Host keys. known_hosts is read leniently and only ever appended to
(KnownHostsFile). An unknown key is refused unless the inventory sets
accept_unknown_host_keys; then exactly its line is appended. Keys on @revoked
lines are refused always.

Bounds: every call returns.
- Requests the host must answer (open a channel, exec, every SFTP operation,
  closing) run under a watchdog. A host that leaves one unanswered for
  `response_timeout_s` gets its connection closed, which releases every paramiko
  call blocked on it, and the call raises ConnectionLost.
- A command's output is read against a deadline (its timeout). Past it the
  channel is closed and the result is timed out (exit_code None) with the
  output so far. While a command is silent the host is probed every
  `keepalive_s` (a channel open it must answer within response_timeout_s), so
  a frozen or vanished host is noticed within keepalive_s + response_timeout_s
  even in a long command.
- paramiko sends a keepalive every `keepalive_s`; the socket has TCP keepalive
  and TCP_USER_TIMEOUT, so a peer that silently drops packets also ends an
  idle connection, and the next call reconnects.

The four durations are class attributes (defaults: the module constants);
tests shorten them per instance.

stdout and stderr are merged on the channel so one reader drains both (two full
pipes deadlock paramiko otherwise).
"""

from __future__ import annotations

import contextlib
import math
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko

from harness.backends.known_hosts import KnownHostsFile
from harness.backends.sftp_tree import download_tree, upload_tree
from harness.backends.ssh_connect import TRANSPORT_ERRORS, Refused, Transient, connect_once
from harness.backends.ssh_watchdog import SftpSession, Watchdog
from harness.backends.transport import (
    CommandResult,
    FetchedFiles,
    LocalTransport,
    Transport,
    read_tail,
    remove_tree_argv,
)
from harness.core.inventory import Cluster, Host
from harness.errors import ConnectionLost, HostUnreachable

KEEPALIVE_S = 15.0  # paramiko keepalive interval; silence before a liveness probe
RESPONSE_TIMEOUT_S = 30.0  # the longest the host may leave one request unanswered
CONNECT_WINDOW_S = 20.0  # first connection: keep trying this long (a restarting sshd)
RECONNECT_WINDOW_S = 60.0  # a dropped connection: keep trying this long, then HostUnreachable
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0

_READ_CHUNK = 32768
_POLL_S = 0.2
_CLOSE_GRACE_S = 2.0  # after the exit status, how long to wait for the host to close the channel


def quote_argv(argv: list[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in argv)


def _brief(argv: list[str]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------- transport


def _drain(channel: paramiko.Channel, sink: Callable[[bytes], None]) -> None:
    """Hand over whatever output the channel holds now, without waiting."""
    channel.settimeout(0.0)
    while True:
        try:
            data = channel.recv(_READ_CHUNK)
        except socket.timeout:
            return
        if not data:
            return
        sink(data)


class SshTransport(Transport):
    keepalive_s: float = KEEPALIVE_S
    response_timeout_s: float = RESPONSE_TIMEOUT_S
    connect_window_s: float = CONNECT_WINDOW_S
    reconnect_window_s: float = RECONNECT_WINDOW_S

    def __init__(self, host: Host, cluster: Cluster) -> None:
        self.host = host.name
        self._spec = host
        self._cluster = cluster
        self._known_hosts = KnownHostsFile(Path(cluster.known_hosts))
        self._where = f"{host.user}@{host.address}:{host.port}"
        self._field = f"hosts.{host.name}"
        self._client: paramiko.SSHClient | None = None
        self._state_lock = threading.Lock()  # guards _client; held only briefly
        self._connect_lock = threading.Lock()  # one connection attempt at a time
        self._ever_connected = False
        self._failure: tuple[float, Refused] | None = None  # when the last attempt gave up, and why
        self._probe_lock = threading.Lock()
        self._last_alive = 0.0

    # -- connection -------------------------------------------------------------------
    def connect(self) -> None:
        self._active()

    def _unreachable(self, failure: Refused) -> HostUnreachable:
        return HostUnreachable(str(failure), file=failure.file, field=self._field,
                               host=self.host if failure.silent else None)

    def _lost(self, what: str, why: object) -> ConnectionLost:
        return ConnectionLost(f"ssh connection to {self._where} lost during {what}: {why} "
                              "(what it did on the host is unknown)", field=self._field, host=self.host)

    def _active(self) -> paramiko.Transport:
        """The live connection, opened (with retries) when there is none."""
        asked = time.monotonic()
        with self._connect_lock:
            with self._state_lock:
                client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if client is not None:
                self._forget(transport)
            # Callers that waited while an attempt gave up share its verdict.
            if self._failure is not None and self._failure[0] >= asked:
                raise self._unreachable(self._failure[1])
            try:
                client = self._connect_with_backoff()
            except Refused as failure:
                self._failure = (time.monotonic(), failure)
                raise self._unreachable(failure) from None
            with self._state_lock:
                self._client = client
            self._ever_connected = True
            self._last_alive = time.monotonic()
            transport = client.get_transport()
            assert transport is not None
            return transport

    def _forget(self, transport: paramiko.Transport | None) -> None:
        """Close a connection that failed; the next call opens a new one."""
        with self._state_lock:
            client = self._client
            if client is not None and client.get_transport() is transport:
                self._client = None
            else:
                client = None
        if client is not None:
            client.close()
        elif transport is not None:
            transport.close()

    def _connect_with_backoff(self) -> paramiko.SSHClient:
        window = self.reconnect_window_s if self._ever_connected else self.connect_window_s
        started = time.monotonic()
        deadline = started + window
        delay = BACKOFF_FIRST_S
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            try:
                return connect_once(self._spec, self._cluster, self._known_hosts,
                                    max(1.0, min(self._cluster.ssh_timeout_s, remaining)),
                                    self.keepalive_s, self.response_timeout_s)
            except Transient as exc:
                last = str(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Refused(f"{last} (gave up after {attempts} attempt(s) in "
                               f"{time.monotonic() - started:.0f} s)", silent=True)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _open_channel(self, what: str) -> tuple[paramiko.Channel, paramiko.Transport]:
        """A new session channel; a connection found dead is replaced once (nothing was sent on it)."""
        for attempt in range(2):
            transport = self._active()
            try:
                return transport.open_session(timeout=self.response_timeout_s), transport
            except paramiko.ChannelException as exc:
                raise HostUnreachable(f"{self._where} refused a new session: {exc}", field=self._field,
                                      host=self.host) from exc
            except TRANSPORT_ERRORS as exc:
                dead = not transport.is_active()
                self._forget(transport)
                if not dead or attempt == 1:
                    raise self._lost(what, f"no channel ({str(exc) or type(exc).__name__})") from exc
        raise AssertionError("unreachable")

    def _check_alive(self, transport: paramiko.Transport, what: str) -> None:
        """Probe a connection that has been quiet for keepalive_s: the host must
        answer a channel open within response_timeout_s."""
        if not self._probe_lock.acquire(blocking=False):
            return  # another call is probing this connection right now
        try:
            if time.monotonic() - self._last_alive < self.keepalive_s:
                return
            try:
                probe = transport.open_session(timeout=self.response_timeout_s)
            except TRANSPORT_ERRORS as exc:
                self._forget(transport)
                raise self._lost(what, f"the host stopped answering ({str(exc) or type(exc).__name__})") from exc
            with contextlib.suppress(*TRANSPORT_ERRORS):
                probe.close()
            self._last_alive = time.monotonic()
        finally:
            self._probe_lock.release()

    @contextlib.contextmanager
    def _guarded(self, transport: paramiko.Transport, what: str) -> Iterator[Watchdog]:
        """Run a block under a watchdog; connection failures inside become ConnectionLost."""
        dog = Watchdog(transport, self.response_timeout_s)
        try:
            with dog:
                yield dog
        except TRANSPORT_ERRORS as exc:
            if dog.fired:
                self._forget(transport)
                raise self._lost(what, f"the host left a request unanswered for {self.response_timeout_s:g} s") from exc
            if not transport.is_active() or not isinstance(exc, OSError) or isinstance(exc, TimeoutError):
                self._forget(transport)
                raise self._lost(what, str(exc) or type(exc).__name__) from exc
            raise  # a local file error, or the host's answer to an SFTP request (no such file, ...)

    # -- commands ---------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        chunks: list[bytes] = []
        exit_code = self._exec(argv, timeout, stdin, chunks.append)
        return CommandResult(self.host, argv, exit_code, b"".join(chunks).decode("utf-8", "replace"))

    def run_to_file(self, argv: list[str], dest: Path, timeout: float, stdin: bytes | None = None) -> CommandResult:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            def sink(data: bytes) -> None:
                out.write(data)
                out.flush()

            exit_code = self._exec(argv, timeout, stdin, sink)
        return CommandResult(self.host, argv, exit_code, read_tail(dest), output_file=dest)

    def stream(self, argv: list[str], on_data: Callable[[bytes], None], stop: threading.Event) -> int | None:
        return self._exec(argv, math.inf, None, on_data, stop)

    def _exec(self, argv: list[str], timeout: float, stdin: bytes | None, sink: Callable[[bytes], None],
              stop: threading.Event | None = None) -> int | None:
        """Exit status of argv on the host, None when it ran past `timeout` (or `stop`
        was set); output to sink as it comes."""
        deadline = time.monotonic() + timeout
        what = f"`{_brief(argv)}`"
        channel, transport = self._open_channel(what)
        with self._guarded(transport, what) as dog:
            try:
                channel.set_combine_stderr(True)
                channel.exec_command(quote_argv(argv))
                dog.disarm()  # from here the command's own deadline and the probes bound the wait
                return self._pump(channel, transport, what, deadline, stdin or b"", sink, stop)
            finally:
                dog.arm()
                with contextlib.suppress(*TRANSPORT_ERRORS):
                    channel.close()

    def _pump(self, channel: paramiko.Channel, transport: paramiko.Transport, what: str, deadline: float,
              stdin: bytes, sink: Callable[[bytes], None], stop: threading.Event | None = None) -> int | None:
        sent = 0
        if not stdin:
            channel.shutdown_write()
        quiet_since = time.monotonic()
        exited_at: float | None = None
        while True:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return None
            sending = sent < len(stdin)
            if sending:
                # Input and output interleaved: a command that prints before it
                # has read all its input must not deadlock us.
                channel.settimeout(0.0)
                try:
                    sent += channel.send(stdin[sent:sent + _READ_CHUNK])
                except socket.timeout:
                    pass
                except OSError:
                    sent = len(stdin)  # the channel closed: the command no longer reads
                if sent >= len(stdin):
                    with contextlib.suppress(*TRANSPORT_ERRORS):
                        channel.shutdown_write()
            channel.settimeout(0.0 if sending else _POLL_S)
            try:
                data: bytes | None = channel.recv(_READ_CHUNK)
            except socket.timeout:
                data = None
            if data:
                sink(data)
                quiet_since = self._last_alive = time.monotonic()
                continue
            if data == b"":
                break  # end of output: the command closed it, or the connection dropped
            if not transport.is_active():
                self._forget(transport)
                raise self._lost(what, "the connection closed")
            if channel.exit_status_ready():
                # sshd may send the exit status before the last of the output: count the
                # grace from the status (or the last data after it), not from the call's start.
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - max(exited_at, quiet_since) >= _CLOSE_GRACE_S:
                    break  # it exited, and something it started in the background keeps its output open
            if time.monotonic() - quiet_since >= self.keepalive_s:
                self._check_alive(transport, what)
                quiet_since = time.monotonic()
            if sending:
                time.sleep(0.005)
        return self._exit_status(channel, transport, what, deadline, sink)

    def _exit_status(self, channel: paramiko.Channel, transport: paramiko.Transport, what: str,
                     deadline: float, sink: Callable[[bytes], None]) -> int | None:
        """After the end of output: the exit status, and any stderr the host sent
        after its EOF (sshd may), up to the channel's close."""
        quiet_since = time.monotonic()
        while not channel.exit_status_ready():
            _drain(channel, sink)
            now = time.monotonic()
            if now >= deadline:
                return None
            if not transport.is_active():
                break
            if now - quiet_since >= self.keepalive_s:
                self._check_alive(transport, what)
                quiet_since = time.monotonic()
            channel.status_event.wait(min(_POLL_S, deadline - now))
        exit_code = channel.recv_exit_status()  # ready: does not wait
        if exit_code == -1 and not transport.is_active():
            self._forget(transport)
            raise self._lost(what, "the connection closed before the command's exit status came")
        # The host closes the channel right after the status; what it sent before comes first.
        closing = time.monotonic() + min(_CLOSE_GRACE_S, self.response_timeout_s)
        while channel.eof_received and not channel.closed and transport.is_active() and time.monotonic() < closing:
            _drain(channel, sink)
            time.sleep(0.01)
        _drain(channel, sink)
        return exit_code  # -1: the host sent none (killed by a signal)

    # -- files ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _sftp(self, what: str) -> Iterator[SftpSession]:
        channel, transport = self._open_channel(what)
        with self._guarded(transport, what) as dog:
            try:
                channel.settimeout(2 * self.response_timeout_s)  # a backstop behind the watchdog
                channel.invoke_subsystem("sftp")
                sftp = paramiko.SFTPClient(channel)
                dog.kick()
                yield SftpSession(sftp, dog, transport)
            finally:
                dog.arm()
                with contextlib.suppress(*TRANSPORT_ERRORS):
                    channel.close()

    def put_tree(self, local: Path, remote: str) -> None:
        self.run(remove_tree_argv(remote), timeout=60).check()
        self.run(["mkdir", "-p", "--", remote], timeout=30).check()
        with self._sftp(f"copying {local} to {remote}") as session:
            upload_tree(session, local, remote)

    def get_tree(self, remote: str, local: Path) -> FetchedFiles:
        """Every regular file under `remote`, copied under `local` (sftp_tree.download_tree)."""
        with self._sftp(f"copying {remote} from the host") as session:
            return download_tree(session, remote, local)

    def close(self) -> None:
        with self._state_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def open_transport(host: Host, cluster: Cluster) -> Transport:
    if host.transport == "local":
        return LocalTransport(host.name)
    transport = SshTransport(host, cluster)
    # A dropped connection is retried for as long as the host may be silent before it counts as lost.
    transport.reconnect_window_s = min(transport.reconnect_window_s, cluster.host_lost_s)
    transport.connect_window_s = cluster.connect_window_s
    return transport
