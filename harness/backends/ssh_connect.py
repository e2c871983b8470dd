"""Opening one SSH connection for harness/backends/ssh.py: a tuned socket (TCP
keepalive and TCP_USER_TIMEOUT, so a peer that silently drops packets ends the
connection), the host key checked against known_hosts, and every failure sorted
into worth another try (Transient) or not (Refused).
"""

from __future__ import annotations

import contextlib
import socket

import paramiko

from harness.backends.known_hosts import HostKeyRejected, KnownHostsFile, KnownHostsPolicy
from harness.core.inventory import Cluster, Host

TCP_USER_TIMEOUT_S = 45  # the kernel gives up on data the peer does not acknowledge
# What paramiko raises when the connection or a request on it fails.
TRANSPORT_ERRORS = (paramiko.SSHException, paramiko.SFTPError, EOFError, OSError)


class Transient(Exception):
    """A connection attempt failed in a way worth retrying."""


class Refused(Exception):
    """A connection attempt failed in a way retrying will not fix."""

    def __init__(self, message: str, file: str | None = None, silent: bool = False) -> None:
        super().__init__(message)
        self.file = file
        self.silent = silent  # the host never answered (not a key or a login it refused): its fault


def tune_socket(sock: socket.socket, keepalive_s: float) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", max(1, int(keepalive_s))), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 6),
                        ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_S * 1000)):
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def connect_once(spec: Host, cluster: Cluster, known_hosts: KnownHostsFile, timeout: float,
                 keepalive_s: float, response_timeout_s: float) -> paramiko.SSHClient:
    """One SSH connection to `spec`, its host key checked against known_hosts.
    Raises Transient when another try may succeed, Refused when it cannot."""
    where = f"{spec.user}@{spec.address}:{spec.port}"
    try:
        sock = socket.create_connection((spec.address, spec.port), timeout=timeout)
    except socket.gaierror as exc:
        raise Refused(f"cannot resolve {spec.address}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise Transient(f"cannot reach {where}: {exc.strerror or exc}") from exc
    tune_socket(sock, keepalive_s)
    client = paramiko.SSHClient()
    try:
        revoked = known_hosts.load_into(client.get_host_keys())
    except OSError as exc:
        sock.close()
        raise Refused(f"cannot read known_hosts: {exc.strerror or exc}", cluster.known_hosts) from exc
    client.set_missing_host_key_policy(KnownHostsPolicy(known_hosts, revoked, cluster.accept_unknown_host_keys))
    try:
        client.connect(
            spec.address,
            port=spec.port,
            username=spec.user,
            key_filename=spec.key,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=response_timeout_s,
            allow_agent=spec.key is None,
            look_for_keys=spec.key is None,
            sock=sock,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise Refused(f"host key of {where} does not match known_hosts ({exc})", cluster.known_hosts) from exc
    except HostKeyRejected as exc:
        client.close()
        hint = ""
        if "not found in known_hosts" in str(exc):
            hint = (" (add it with ssh-keyscan, or set cluster.accept_unknown_host_keys: true"
                    " to accept and save it)")
        raise Refused(f"ssh to {where} failed: {exc}{hint}") from exc
    except TRANSPORT_ERRORS as exc:
        # Still connected: the host answered and said no (authentication, key file).
        # Gone: it dropped or timed out during the handshake, which is worth another try.
        transport = client.get_transport()
        answered = transport is not None and transport.is_active() and "timeout" not in str(exc).lower()
        client.close()
        if answered:
            raise Refused(f"ssh to {where} failed: {exc}") from exc
        raise Transient(f"ssh to {where} failed: {str(exc) or type(exc).__name__}") from exc
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(max(1, round(keepalive_s)))
    return client
