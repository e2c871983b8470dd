"""The SSH transport under faults, against real sshd: a blip, a host that stays
down, a command past its timeout, a frozen host during SFTP and during a long
command, output streamed to a file, and known_hosts kept intact under parallel
first connections.

Every fault is done to a throwaway sshd of the test's own (tests/spare_sshd.py,
on 127.0.0.4..8); the shared test hosts are only ever connected to.

Remote output is compared by its end: root's shell startup files on this
machine may print a line of their own first (pyenv, under concurrent logins).
"""

from __future__ import annotations

import base64
import os
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest

from harness.backends.ssh import CONNECT_WINDOW_S, RECONNECT_WINDOW_S, SshTransport
from harness.backends.transport import TAIL_BYTES, LocalTransport, Transport
from harness.core.inventory import Cluster, Host
from harness.errors import ConnectionLost, HostUnreachable, RemoteCommandError, RemoteTimeout

if TYPE_CHECKING:  # pytest keeps one `conftest` module at a time: import for types only
    from conftest import TestInfra
    from spare_sshd import SpareSshd  # imported by pytest_plugins, with assertion rewriting

pytest_plugins = ["spare_sshd"]  # the spare_sshd fixture

MakeSpare = Callable[..., "SpareSshd"]


def ssh_transport(infra: "TestInfra", address: str, port: int, known_hosts: Path, *, accept: bool = False,
                  name: str = "spare", **timing: float) -> SshTransport:
    host = Host(name=name, address=address, port=port, user="root", key=str(infra.client_key))
    cluster = Cluster(known_hosts=str(known_hosts), accept_unknown_host_keys=accept, ssh_timeout_s=5)
    transport = SshTransport(host, cluster)
    for attribute, value in timing.items():
        assert hasattr(transport, attribute), attribute
        setattr(transport, attribute, value)
    return transport


def to_spare(infra: "TestInfra", spare: "SpareSshd", **timing: float) -> SshTransport:
    return ssh_transport(infra, spare.address, spare.port, spare.known_hosts_file(), **timing)


def later(seconds: float, action: Callable[[], Any]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_timing_bounds_are_about_a_minute() -> None:
    assert SshTransport.reconnect_window_s == RECONNECT_WINDOW_S and 30 <= RECONNECT_WINDOW_S <= 90
    assert SshTransport.connect_window_s == CONNECT_WINDOW_S <= RECONNECT_WINDOW_S
    assert SshTransport.keepalive_s + SshTransport.response_timeout_s <= 60


# ---------------------------------------------------------------------------------- connection faults


def test_a_blip_does_not_fail_the_next_command(infra: "TestInfra", spare_sshd: MakeSpare) -> None:
    spare = spare_sshd()
    transport = to_spare(infra, spare)
    try:
        assert transport.run(["echo", "before"], timeout=10).output.endswith("before\n")
        spare.stop()  # listener and the session serving us killed: our connection drops
        restart = later(2.5, spare.start)
        started = time.monotonic()
        result = transport.run(["echo", "after"], timeout=10)
        elapsed = time.monotonic() - started
        restart.join()
        assert result.ok and result.output.endswith("after\n")
        assert 2.0 <= elapsed <= 20, elapsed  # it waited for the host, and not for long
    finally:
        transport.close()


def test_a_host_that_stays_down_is_unreachable_within_the_bound(infra: "TestInfra", spare_sshd: MakeSpare) -> None:
    spare = spare_sshd()
    transport = to_spare(infra, spare, reconnect_window_s=5)
    try:
        assert transport.run(["true"], timeout=10).ok
        spare.stop()
        started = time.monotonic()
        with pytest.raises(HostUnreachable) as info:
            transport.run(["echo", "never"], timeout=10)
        elapsed = time.monotonic() - started
        assert 4.5 <= elapsed <= 5 + 5 + 3, elapsed  # the window, plus at most one attempt's timeout
        assert not isinstance(info.value, ConnectionLost)  # nothing was sent: it could not connect
        assert "hosts.spare" in str(info.value) and spare.address in str(info.value)
        # Once the host is back, the same transport serves again.
        spare.start()
        assert transport.run(["echo", "back"], timeout=10).output.endswith("back\n")
    finally:
        transport.close()


def test_first_connection_to_a_dead_address_gives_up_within_its_window(infra: "TestInfra") -> None:
    ghost = infra.unreachable  # nothing ever listens there
    transport = ssh_transport(infra, ghost.address, ghost.port, infra.known_hosts, name="ghost", connect_window_s=2)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="hosts.ghost") as info:
        transport.connect()
    assert time.monotonic() - started <= 2 + 5 + 3
    assert "127.0.0.9" in str(info.value) and "attempt" in str(info.value)


def test_waiting_callers_share_one_verdict(infra: "TestInfra", spare_sshd: MakeSpare) -> None:
    """Threads that queued behind a reconnect that gave up fail at once, not one window each."""
    spare = spare_sshd()
    transport = to_spare(infra, spare, reconnect_window_s=3)
    try:
        assert transport.run(["true"], timeout=10).ok
        spare.stop()
        errors: list[BaseException] = []

        def call() -> None:
            try:
                transport.run(["true"], timeout=10)
            except HostUnreachable as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(errors) == 4
        assert time.monotonic() - started <= 3 + 5 + 5, "each waiting thread tried its own window"
    finally:
        transport.close()


# ---------------------------------------------------------------------------------- commands


def test_command_timeout_is_typed_and_bounded(infra: "TestInfra", spare_sshd: MakeSpare) -> None:
    spare = spare_sshd()
    transport = to_spare(infra, spare)
    try:
        started = time.monotonic()
        result = transport.run(["sh", "-c", "echo started; sleep 30"], timeout=2)
        assert time.monotonic() - started <= 8
        assert result.exit_code is None and result.timed_out and result.partial
        assert result.output.endswith("started\n")
        with pytest.raises(RemoteTimeout) as info:
            result.check()
        assert isinstance(info.value, RemoteCommandError) and "timed out" in str(info.value)
        # A timeout is the command's, not the connection's: it still serves.
        assert transport.run(["echo", "still here"], timeout=10).output.endswith("still here\n")
    finally:
        transport.close()


def test_failed_command_quoting_and_stdin(infra: "TestInfra", spare_sshd: MakeSpare) -> None:
    spare = spare_sshd()
    transport = to_spare(infra, spare)
    try:
        failed = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
        assert failed.exit_code == 3 and not failed.timed_out
        assert "out\n" in failed.output and "err\n" in failed.output
        with pytest.raises(RemoteCommandError) as info:
            failed.check()
        assert not isinstance(info.value, RemoteTimeout)
        # Exited, while a child it left in the background holds its output open: done, not timed out.
        started = time.monotonic()
        lingering = transport.run(["sh", "-c", "sleep 30 & echo started; exit 4"], timeout=25)
        assert lingering.exit_code == 4 and lingering.output.endswith("started\n")
        assert time.monotonic() - started <= 12
        quoted = transport.run(["printf", "%s|", "a b", "$HOME", ";", "'q'", "`id`"], timeout=10)
        assert quoted.output.endswith("\na b|$HOME|;|'q'|`id`|") or quoted.output == "a b|$HOME|;|'q'|`id`|"
        # Input larger than the channel window while the command echoes it back.
        payload = "".join(f"line {i}\n" for i in range(300000)).encode()
        echoed = transport.run(["sh", "-c", "cat; echo done >&2"], timeout=60, stdin=payload)
        # stdout and stderr are two pipes merged as they come: "done" may land anywhere after cat's last read.
        assert echoed.ok and echoed.output.replace("done\n", "", 1).endswith(payload.decode())
        counted = transport.run(["wc", "-c"], timeout=60, stdin=payload)
        assert counted.ok and counted.output.strip() == str(len(payload))
    finally:
        transport.close()


@pytest.fixture(params=["local", "ssh"])
def any_transport(request: pytest.FixtureRequest, infra: "TestInfra", spare_sshd: MakeSpare) -> Transport:
    if request.param == "local":
        return LocalTransport("controller")
    transport = to_spare(infra, spare_sshd())
    request.addfinalizer(transport.close)
    return transport


def test_run_to_file_keeps_partial_output_on_timeout(any_transport: Transport, tmp_path: Path) -> None:
    dest = tmp_path / "logs" / "container.log"
    started = time.monotonic()
    result = any_transport.run_to_file(["sh", "-c", "echo first; echo second >&2; sleep 30"], dest, timeout=2)
    assert time.monotonic() - started <= 8
    assert result.partial and result.exit_code is None and result.output_file == dest
    assert dest.read_text().endswith("first\nsecond\n")
    assert result.output.endswith("first\nsecond\n")
    with pytest.raises(RemoteTimeout):
        result.check()


def test_run_to_file_streams_everything_and_keeps_a_tail(any_transport: Transport, tmp_path: Path) -> None:
    dest = tmp_path / "seq.log"
    result = any_transport.run_to_file(["seq", "1", "300000"], dest, timeout=60)
    assert result.ok and not result.partial
    assert dest.read_text().endswith("".join(f"{i}\n" for i in range(1, 300001)))
    assert len(result.output.encode()) <= TAIL_BYTES
    assert result.output.endswith("299999\n300000\n") and result.output.split("\n", 1)[0].isdigit()


def test_run_to_file_writes_as_output_arrives(infra: "TestInfra", spare_sshd: MakeSpare, tmp_path: Path) -> None:
    transport = to_spare(infra, spare_sshd())
    dest = tmp_path / "slow.log"
    seen: list[str] = []
    watcher = later(1.5, lambda: seen.append(dest.read_text() if dest.exists() else "<missing>"))
    try:
        result = transport.run_to_file(["sh", "-c", "echo early; sleep 3; echo late"], dest, timeout=30)
        watcher.join()
        assert result.ok and dest.read_text().endswith("early\nlate\n")
        assert len(seen) == 1 and seen[0].endswith("early\n")  # on disk while the command still ran
    finally:
        transport.close()


# ---------------------------------------------------------------------------------- a frozen host


def test_sftp_get_from_a_frozen_host_fails_bounded(infra: "TestInfra", spare_sshd: MakeSpare, tmp_path: Path) -> None:
    spare = spare_sshd()
    transport = to_spare(infra, spare, response_timeout_s=3, keepalive_s=2)
    remote = tmp_path / "remote"
    remote.mkdir()
    with (remote / "big.bin").open("wb") as handle:  # sparse: cheap on disk, long on the wire
        handle.truncate(4 << 30)
    local = tmp_path / "local"
    outcome: list[BaseException | None] = []
    ended = threading.Event()

    def fetch() -> None:
        try:
            transport.get_tree(str(remote), local)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)
        ended.set()

    try:
        thread = threading.Thread(target=fetch, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not ((local / "big.bin").exists() and (local / "big.bin").stat().st_size > (1 << 20)):
            assert time.monotonic() < deadline and not ended.is_set(), f"the copy never started: {outcome}"
            time.sleep(0.05)
        spare.freeze()
        frozen_at = time.monotonic()
        assert ended.wait(3 + 15), "get_tree still blocked on the frozen host"
        elapsed = time.monotonic() - frozen_at
        assert isinstance(outcome[0], ConnectionLost), outcome
        assert 2 <= elapsed <= 3 + 10, elapsed
        assert "hosts.spare" in str(outcome[0])
    finally:
        spare.thaw()
    try:
        # Thawed: the next calls reconnect and work, and a small tree comes back whole.
        assert transport.run(["echo", "thawed"], timeout=20).output.endswith("thawed\n")
        (remote / "big.bin").unlink()
        (remote / "sub").mkdir()
        (remote / "sub" / "a.txt").write_text("alpha\n")
        (remote / "b.log").write_bytes(b"\x00\x01binary")
        os.mkfifo(remote / "pipe")
        fetched = transport.get_tree(str(remote), tmp_path / "again")
        assert sorted(p.relative_to(tmp_path / "again").as_posix() for p in fetched) == ["b.log", "sub/a.txt"]
        assert (tmp_path / "again" / "sub" / "a.txt").read_text() == "alpha\n"
        assert (tmp_path / "again" / "b.log").read_bytes() == b"\x00\x01binary"
        assert [s for s in fetched.skipped if "pipe" in s and "not a regular file" in s]
        assert transport.get_tree(str(tmp_path / "no-such-folder"), tmp_path / "none") == []
    finally:
        transport.close()


def test_sftp_put_to_a_frozen_host_fails_bounded(infra: "TestInfra", spare_sshd: MakeSpare, tmp_path: Path) -> None:
    spare = spare_sshd()
    transport = to_spare(infra, spare, response_timeout_s=3, keepalive_s=2)
    local = tmp_path / "context"
    local.mkdir()
    (local / "Dockerfile").write_text("FROM scratch\n")
    try:
        transport.put_tree(local, str(tmp_path / "uploaded"))
        assert (tmp_path / "uploaded" / "Dockerfile").read_text() == "FROM scratch\n"
        spare.freeze(sessions_only=True)
        started = time.monotonic()
        with pytest.raises(ConnectionLost):
            transport.put_tree(local, str(tmp_path / "uploaded-again"))
        assert time.monotonic() - started <= 3 + 10
    finally:
        spare.thaw()
        transport.close()


def test_a_host_that_goes_silent_during_a_long_command_is_noticed(infra: "TestInfra", spare_sshd: MakeSpare) -> None:
    spare = spare_sshd()
    transport = to_spare(infra, spare, response_timeout_s=3, keepalive_s=1)
    try:
        assert transport.run(["true"], timeout=10).ok
        freeze = later(1.0, spare.freeze)
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="sleep 600"):
            transport.run(["sleep", "600"], timeout=900)
        elapsed = time.monotonic() - started
        freeze.join()
        assert elapsed <= 1 + 1 + 3 + 10, elapsed  # freeze + quiet before the probe + its answer time
    finally:
        spare.kill_sessions()  # `sleep 600` with them: thawed first, it would outlive its session
        spare.thaw()
    try:
        assert transport.run(["echo", "alive"], timeout=20).output.endswith("alive\n")
    finally:
        transport.close()


# ---------------------------------------------------------------------------------- known_hosts


def ssh_blob(*parts: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(part)) + part for part in parts)).decode()


def ed25519_line(names: str) -> str:
    return f"{names} ssh-ed25519 {ssh_blob(b'ssh-ed25519', os.urandom(32))}"


def awkward_known_hosts(infra: "TestInfra") -> str:
    """A known_hosts with everything paramiko cannot use, ending without a newline."""
    sk_key = ssh_blob(b"sk-ssh-ed25519@openssh.com", os.urandom(32), b"ssh:")
    return "\n".join([
        "# known_hosts of the fault tests: every line here must survive",
        infra.known_hosts.read_text().strip(),
        "",
        "@cert-authority *.example.org " + ed25519_line("").strip(),
        "@revoked " + ed25519_line("[10.9.9.9]:22"),
        f"10.1.2.3 sk-ssh-ed25519@openssh.com {sk_key} security-key",
        "|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= " + ed25519_line("").strip(),
        "this line is not a key at all",
        "10.1.2.4 ssh-ed25519 !!!not-base64!!!",
        "   # an indented comment",
        ed25519_line("10.1.2.5") + "   trailing comment",
    ])


def test_known_hosts_parallel_first_connections_append_one_line_each(
        infra: "TestInfra", spare_sshd: MakeSpare, tmp_path: Path) -> None:
    spares = spare_sshd(count=5)
    known_hosts = tmp_path / "ssh" / "known_hosts"
    known_hosts.parent.mkdir()
    original = awkward_known_hosts(infra)
    known_hosts.write_text(original)
    # Two connections per new host, all at once: every key must be saved exactly once.
    transports = [ssh_transport(infra, s.address, s.port, known_hosts, accept=True) for s in spares for _ in (0, 1)]
    barrier = threading.Barrier(len(transports))
    outputs: list[str | BaseException] = [""] * len(transports)

    def first_contact(index: int) -> None:
        barrier.wait(30)
        try:
            outputs[index] = transports[index].run(["echo", "hello"], timeout=30).output
        except BaseException as exc:  # noqa: BLE001 - checked below
            outputs[index] = exc

    threads = [threading.Thread(target=first_contact, args=(i,)) for i in range(len(transports))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert all(isinstance(o, str) and o.endswith("hello\n") for o in outputs), [str(o) for o in outputs]
    finally:
        for transport in transports:
            transport.close()

    text = known_hosts.read_text()
    assert text.startswith(original + "\n"), "an original line was changed, or the last one was glued to"
    added = text[len(original) + 1:].splitlines()
    assert sorted(added) == sorted(s.known_hosts_line for s in spares)
    assert (tmp_path / "ssh" / "known_hosts.lock").exists()

    # Saved right: strict checking now lets every host in, the shared node1 too
    # (its line sits among the awkward ones), and nothing is written.
    node1 = infra.host("node1")
    strict = [ssh_transport(infra, s.address, s.port, known_hosts) for s in spares]
    strict.append(ssh_transport(infra, node1.address, node1.port, known_hosts, name="node1"))
    try:
        for transport in strict:
            assert transport.run(["echo", "known"], timeout=30).output.endswith("known\n")
    finally:
        for transport in strict:
            transport.close()
    assert known_hosts.read_text() == text


def test_unknown_key_is_refused_without_the_opt_in(infra: "TestInfra", spare_sshd: MakeSpare,
                                                    tmp_path: Path) -> None:
    spare = spare_sshd()
    known_hosts = tmp_path / "known_hosts"
    original = awkward_known_hosts(infra)
    known_hosts.write_text(original)
    transport = ssh_transport(infra, spare.address, spare.port, known_hosts)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="not found in known_hosts") as info:
        transport.connect()
    assert time.monotonic() - started < 5, "a refused key is final, not retried"
    assert "accept_unknown_host_keys" in str(info.value)
    assert known_hosts.read_text() == original


def test_revoked_key_is_refused_even_with_the_opt_in(infra: "TestInfra", spare_sshd: MakeSpare,
                                                     tmp_path: Path) -> None:
    spare = spare_sshd()
    known_hosts = tmp_path / "known_hosts"
    original = f"@revoked * {spare.public_key}\n"
    known_hosts.write_text(original)
    transport = ssh_transport(infra, spare.address, spare.port, known_hosts, accept=True)
    with pytest.raises(HostUnreachable, match="revoked"):
        transport.connect()
    assert known_hosts.read_text() == original


def test_changed_host_key_is_refused_even_with_the_opt_in(infra: "TestInfra", spare_sshd: MakeSpare,
                                                          tmp_path: Path) -> None:
    spare = spare_sshd()
    known_hosts = tmp_path / "known_hosts"
    original = ed25519_line(spare.host_name) + "\n"
    known_hosts.write_text(original)
    transport = ssh_transport(infra, spare.address, spare.port, known_hosts, accept=True)
    with pytest.raises(HostUnreachable, match="does not match known_hosts"):
        transport.connect()
    assert known_hosts.read_text() == original
