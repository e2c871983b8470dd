"""Throwaway SSH hosts for fault tests: stop, restart, freeze and thaw them at will.

The shared test hosts (127.0.0.2/3:2222, made by tests/infra/setup.sh) must
never be stopped: other tests use them at the same time. A SpareSshd is an
`sshd -D` of its own (a child process of the test) on a free address among
127.0.0.4 .. 127.0.0.8, port 2222, with its own host key and config in a folder
of the test, accepting the test client key (.cache/testhosts/id_ed25519, so a
hosts.yaml entry with `key: infra.client_key` logs in). 127.0.0.9 is never used:
it is the tests' unreachable host. An address is held through a flock on
/tmp/bench-spare-sshd/<address>.lock while a SpareSshd owns it, so concurrent
pytest runs never share one (a claim waits up to two minutes for free ones).

Use it from a test module (it needs conftest's `infra` fixture; tests/ is on
sys.path, as for conftest):

    pytest_plugins = ["spare_sshd"]  # registers the spare_sshd fixture
    if TYPE_CHECKING:  # a plain import before pytest_plugins would skip assertion rewriting here
        from spare_sshd import SpareSshd

    def test_host_lost(spare_sshd, make_hosts_yaml, infra, tmp_path):
        host: SpareSshd = spare_sshd()           # started, listening
        several = spare_sshd(count=3)            # a list, claimed together
        known = host.known_hosts_file(tmp_path / "known_hosts", include=infra.known_hosts)
        make_hosts_yaml(hosts=["node1"], extra_hosts=[host.inventory_entry("spare")],
                        cluster_overrides={"known_hosts": str(known)})
        host.stop()      # listener and every session killed: established connections drop
        host.start()     # back, same address and host key
        host.freeze()    # SIGSTOP listener and sessions: connections go silent, nothing is closed
        host.thaw()      # SIGCONT
        host.kill_sessions()   # drop the established connections, keep listening
        noisy = spare_sshd(extra_config=["ForceCommand . /path/banner.sh"])  # sshd_config lines of its own

Every SpareSshd the fixture made is stopped and its address released after the test.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TextIO

import pytest

SPARE_ADDRESSES = ("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8")
SPARE_PORT = 2222
SSHD = "/usr/sbin/sshd"
LOCK_DIR = Path("/tmp/bench-spare-sshd")


def _port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _children() -> dict[int, list[int]]:
    """ppid -> pids, for every process now."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree = _children()
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in tree.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def try_claim(address: str, probe_s: float = 0.5) -> TextIO | None:
    """The address's lock file, held, when no other test holds it and nothing
    (not ours) listens on the spare port there; None otherwise."""
    lock = (LOCK_DIR / f"{address}.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    if _port_open(address, SPARE_PORT, timeout=probe_s):
        lock.close()
        return None
    return lock


def claim_addresses(count: int, wait_s: float = 120.0) -> list[tuple[str, IO[str]]]:
    """`count` free spare addresses, each with its flock held, claimed all at
    once (never some while waiting for the rest, so two claimers cannot block
    each other for good)."""
    if not 1 <= count <= len(SPARE_ADDRESSES):
        raise ValueError(f"between 1 and {len(SPARE_ADDRESSES)} spare addresses exist, not {count}")
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        claimed: list[tuple[str, IO[str]]] = []
        for address in SPARE_ADDRESSES:
            lock = try_claim(address)
            if lock is None:
                continue
            claimed.append((address, lock))
            if len(claimed) == count:
                return claimed
        for _, lock in claimed:
            lock.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {count} free spare sshd address(es) among {', '.join(SPARE_ADDRESSES)}")
        time.sleep(0.2 + random.random())


class SpareSshd:
    """One sshd -D on a spare loopback address; see the module's docstring."""

    def __init__(self, folder: Path, client_public_key: Path, claim: tuple[str, IO[str]] | None = None,
                 extra_config: Sequence[str] = ()) -> None:
        """claim: an (address, held lock) from claim_addresses(); default: claim one now.
        extra_config: sshd_config lines put first (sshd keeps the first value it reads)."""
        self.folder = folder
        self.extra_config = list(extra_config)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = SPARE_PORT
        self.address, lock = claim or claim_addresses(1)[0]
        self._lock: IO[str] | None = lock
        self.host_key = folder / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"spare-{self.address}",
                        "-f", str(self.host_key)], check=True, capture_output=True, timeout=30)
        self.config = folder / "sshd_config"
        self.log = folder / "sshd.log"
        self.config.write_text(self._config_text(client_public_key), encoding="utf-8")
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            self.release()
            raise RuntimeError(f"bad sshd config {self.config}: {check.stderr.strip()}")
        self._proc: subprocess.Popen[bytes] | None = None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _config_text(self, client_public_key: Path) -> str:
        return "\n".join([
            f"# Spare SSH test host (tests/spare_sshd.py) on {self.address}:{self.port}.",
            *self.extra_config,
            f"ListenAddress {self.address}:{self.port}",
            f'HostKey "{self.host_key}"',
            f'PidFile "{self.folder / "sshd.pid"}"',
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f'AuthorizedKeysFile "{client_public_key}"',
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "ClientAliveInterval 15",
            "ClientAliveCountMax 4",
            # Sessions killed mid `pyenv rehash` (root's .bashrc) leave its lock: never wait for it.
            "SetEnv PYENV_REHASH_TIMEOUT=0",
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "Subsystem sftp internal-sftp",
            "",
        ])

    # -- identity ---------------------------------------------------------------------
    @property
    def host_name(self) -> str:
        """The name known_hosts files it under: [address]:port."""
        return f"[{self.address}]:{self.port}"

    @property
    def public_key(self) -> str:
        """'ssh-ed25519 AAAA...' (type and key, no comment)."""
        return " ".join(Path(f"{self.host_key}.pub").read_text(encoding="utf-8").split()[:2])

    @property
    def known_hosts_line(self) -> str:
        return f"{self.host_name} {self.public_key}"

    def known_hosts_file(self, path: Path | None = None, include: Path | None = None) -> Path:
        """Write a known_hosts with this host's key (default: in its folder),
        after the lines of `include` (e.g. infra.known_hosts) when given."""
        path = path or self.folder / "known_hosts"
        lines = include.read_text(encoding="utf-8").splitlines() if include is not None else []
        path.write_text("\n".join([*lines, self.known_hosts_line]) + "\n", encoding="utf-8")
        return path

    def inventory_entry(self, name: str, **over: Any) -> dict[str, Any]:
        """An extra_hosts entry for conftest's write_hosts_yaml / make_hosts_yaml."""
        return {"name": name, "address": self.address, "port": self.port, **over}

    # -- life -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The listener's pid while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def session_pids(self) -> list[int]:
        """Every process below the listener: one sshd per connection, and what it runs."""
        return _descendants(self._proc.pid) if self.pid is not None else []

    def start(self, timeout: float = 15.0) -> None:
        if self.pid is not None:
            return
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _port_open(self.address, self.port, timeout=0.5):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"spare sshd on {self.address}:{self.port} did not come up:\n{tail}")
            time.sleep(0.05)

    def kill_sessions(self) -> None:
        """SIGKILL every session (established connections drop); the listener stays."""
        _signal(self.session_pids(), signal.SIGKILL)

    def stop(self) -> None:
        """Kill the sessions and the listener: the host is gone, its connections dropped."""
        if self._proc is None:
            return
        self.kill_sessions()
        if self._proc.poll() is None:
            self._proc.terminate()
            _signal([self._proc.pid], signal.SIGCONT)  # a frozen listener must see the TERM
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def freeze(self, sessions_only: bool = False) -> None:
        """SIGSTOP the sessions (and the listener unless sessions_only): the host
        goes silent, its connections stay open, the kernel still acknowledges.
        A session whose client gave up meanwhile ends when thawed and leaves its
        command running without it: kill_sessions() before thaw() to avoid that."""
        pids = self.session_pids()
        if not sessions_only and self.pid is not None:
            pids.append(self.pid)
        _signal(pids, signal.SIGSTOP)

    def thaw(self) -> None:
        pids = self.session_pids()
        if self.pid is not None:
            pids.append(self.pid)
        _signal(pids, signal.SIGCONT)

    def close(self) -> None:
        self.stop()  # SIGKILL reaches frozen processes too; thawed first, they could orphan their commands
        self.release()


@pytest.fixture
def spare_sshd(infra: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: spare_sshd(start=True) -> a SpareSshd of this test;
    spare_sshd(count=n) -> a list of n, their addresses claimed together (ask
    for all you need in one call); extra_config=[...]: sshd_config lines of
    theirs. Stopped and released after the test."""
    made: list[SpareSshd] = []
    public_key = Path(f"{infra.client_key}.pub")

    def make(start: bool = True, count: int | None = None, extra_config: Sequence[str] = ()) -> Any:
        hosts = []
        for claim in claim_addresses(count or 1):
            hosts.append(SpareSshd(tmp_path / f"spare-sshd-{len(made)}", public_key, claim, extra_config))
            made.append(hosts[-1])
        if start:
            for host in hosts:
                host.start()
        return hosts if count is not None else hosts[0]

    yield make
    for host in made:
        host.close()
