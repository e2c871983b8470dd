"""One campaign per host: a lock directory in the host's work_dir, taken over SSH.

Taking it is one atomic rename on the host: the holder's JSON is written into a
fresh directory, which is then renamed onto ``<work_dir>/.bench-lock`` with
``mv -T`` (rename(2) never replaces a non-empty directory). Whoever finds it
taken reads the holder (controller host, pid, campaign, since when). A holder is
stale when its controller is this machine and its pid is gone (or is another
process now), or when it gave no sign of life (``heartbeat``, refreshed before
every job) for longer than the bound; a stale lock is taken over with a warning.
`bench` checks the locks of its hosts and refuses a live holder's.

Taking over compares the holder's token before moving the directory away; two
controllers taking over the same stale lock in the same instant is the one race
left (the second would then find the first's lock and stop).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from pydantic import BaseModel, Field, ValidationError

from harness.backends.transport import Transport
from harness.core.inventory import Host
from harness.errors import HarnessError, HostUnreachable, UserError
from harness.parallel import run_all


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

LOCK_DIR_NAME = ".bench-lock"
HOLDER_FILE = "holder.json"
LOCK_TIMEOUT_S = 30.0
# A holder silent this long is stale (a campaign refreshes its locks before every job).
DEFAULT_STALE_AFTER_S = 26 * 3600.0

_TAKE = r"""
lock=$1; tmp=$1.new.$$
mkdir -p -- "$(dirname -- "$lock")" && rm -rf -- "$tmp" && mkdir -- "$tmp" && cat > "$tmp/holder.json" || exit 3
if mv -T -- "$tmp" "$lock" 2>/dev/null; then echo LOCK-TAKEN; exit 0; fi
rm -rf -- "$tmp"
echo "LOCK-HELD $(stat -c %Y -- "$lock" 2>/dev/null || echo 0)"
cat -- "$lock/holder.json" 2>/dev/null
exit 0
"""
_READ = r"""
[ -d "$1" ] || { echo LOCK-FREE; exit 0; }
echo "LOCK-HELD $(stat -c %Y -- "$1" 2>/dev/null || echo 0)"
cat -- "$1/holder.json" 2>/dev/null
exit 0
"""
# Remove the lock only while it still holds this token ($2; empty: an unreadable holder).
_CLEAR = r"""
[ -z "$2" ] || grep -qF -- "$2" "$1/holder.json" 2>/dev/null || { echo LOCK-CHANGED; exit 0; }
mv -T -- "$1" "$1.old.$$" 2>/dev/null || { echo LOCK-CHANGED; exit 0; }
rm -rf -- "$1.old.$$"; echo LOCK-CLEARED
"""
_REFRESH = r"""
grep -qF -- "$2" "$1/holder.json" 2>/dev/null || { echo LOCK-LOST; exit 0; }
cat > "$1/holder.json.new" && mv -f -- "$1/holder.json.new" "$1/holder.json" && echo LOCK-REFRESHED
"""


class LockHolder(BaseModel):
    controller: str  # the controller's host name
    pid: int
    pid_started: float | None = None  # the process's start time, to tell a reused pid
    campaign: str  # name and folder
    since: str  # ISO time it was taken
    heartbeat: float = Field(default_factory=time.time)
    token: str = Field(default_factory=lambda: secrets.token_hex(8))

    def describe(self) -> str:
        return (f"campaign {self.campaign} (controller {self.controller}, pid {self.pid}, since {self.since}, "
                f"last sign of life {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.heartbeat))})")


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def this_controller(campaign: str) -> LockHolder:
    pid = os.getpid()
    return LockHolder(controller=socket.gethostname(), pid=pid, pid_started=_process_start(pid), campaign=campaign,
                      since=now_iso())


class HostLocked(UserError):
    """A live holder has the lock of a host (exit 2, naming it)."""


@dataclass(frozen=True)
class LockState:
    host: str
    holder: LockHolder | None  # None: free, or held by an unreadable holder (see `held`)
    held: bool
    mtime: float = 0.0


def stale_reason(holder: LockHolder | None, mtime: float, stale_after_s: float, now: float | None = None) -> str | None:
    """Why a lock is stale, or None when its holder may be alive."""
    now = time.time() if now is None else now
    if holder is None:
        return f"its holder file is unreadable and it is {(now - mtime) / 3600:.1f} h old" \
            if now - mtime > stale_after_s else None
    if holder.controller == socket.gethostname():
        started = _process_start(holder.pid)
        if started is None:
            return f"its controller (pid {holder.pid} on this machine) is gone"
        if holder.pid_started is not None and abs(started - holder.pid_started) > 1.0:
            return f"pid {holder.pid} on this machine is another process now"
    if now - holder.heartbeat > stale_after_s:
        return f"no sign of life from its controller for {(now - holder.heartbeat) / 3600:.1f} h"
    return None


def _parse(host: str, output: str) -> LockState:
    lines = output.splitlines()
    marker = next((i for i, line in enumerate(lines) if line.startswith(("LOCK-HELD", "LOCK-FREE", "LOCK-TAKEN"))), None)
    if marker is None:
        raise HarnessError(f"{host}: unexpected answer from the lock: {output.strip()[-300:]}")
    head = lines[marker].split()
    if head[0] != "LOCK-HELD":
        return LockState(host, None, held=False)
    mtime = float(head[1]) if len(head) > 1 and head[1].isdigit() else 0.0
    try:
        holder = LockHolder.model_validate(json.loads("\n".join(lines[marker + 1:])))
    except (ValueError, ValidationError):
        holder = None
    return LockState(host, holder, held=True, mtime=mtime)


class HostLocks:
    """The locks one controller takes on its hosts (through the campaign's backend connections)."""

    def __init__(self, transport_for: Callable[[Host], Transport], holder: LockHolder, stale_after_s: float,
                 warn: Callable[[str], None]) -> None:
        self._transport_for = transport_for
        self.holder = holder
        self.stale_after_s = stale_after_s
        self._warn = warn
        self.taken: dict[str, Host] = {}

    def _run(self, host: Host, script: str, *args: str, stdin: bytes | None = None) -> str:
        path = f"{host.work_dir}/{LOCK_DIR_NAME}"
        result = self._transport_for(host).run(["sh", "-c", script, "sh", path, *args], timeout=LOCK_TIMEOUT_S,
                                               stdin=stdin)
        if result.exit_code is None:
            raise HostUnreachable(f"{host.name}: the lock command timed out", field=f"hosts.{host.name}",
                                  host=host.name)
        if result.exit_code != 0:
            raise HarnessError(f"{host.name}: cannot write the lock in {host.work_dir}: {result.output.strip()[-300:]}")
        return result.output

    def _payload(self) -> bytes:
        self.holder.heartbeat = time.time()
        return self.holder.model_dump_json().encode()

    def acquire(self, host: Host) -> None:
        """Take the host's lock (again: refresh it); HostLocked naming a live holder.
        A host that cannot be reached raises HostUnreachable (or a HarnessError)."""
        if host.name in self.taken:
            self.refresh(host)
            return
        for _ in range(3):
            state = _parse(host.name, self._run(host, _TAKE, stdin=self._payload()))
            if not state.held:
                self.taken[host.name] = host
                return
            if state.holder is not None and state.holder.token == self.holder.token:
                self.taken[host.name] = host
                return
            reason = stale_reason(state.holder, state.mtime, self.stale_after_s)
            who = state.holder.describe() if state.holder else "an unreadable holder"
            if reason is None:
                raise HostLocked(f"{host.name} is locked by {who}; wait for it to end, or stop it",
                                 field=f"hosts.{host.name}")
            self._warn(f"{host.name}: taking over a stale lock ({reason}): it was held by {who}")
            token = state.holder.token if state.holder else ""
            self._run(host, _CLEAR, token)
        raise HostLocked(f"{host.name}: the lock changed hands while it was taken over; try again",
                         field=f"hosts.{host.name}")

    def refresh(self, host: Host) -> None:
        """A sign of life in the host's lock (before each job)."""
        output = self._run(host, _REFRESH, self.holder.token, stdin=self._payload())
        if "LOCK-LOST" in output:
            self.taken.pop(host.name, None)
            self.acquire(host)

    def release_all(self) -> list[str]:
        """Remove every lock this controller holds; problems are returned, not raised."""
        problems = []
        for host in list(self.taken.values()):
            try:
                self._run(host, _CLEAR, self.holder.token)
            except HarnessError as exc:
                problems.append(f"{host.name}: lock not removed: {exc}")
            self.taken.pop(host.name, None)
        return problems


def read_lock(transport: Transport, host: Host) -> LockState:
    path = f"{host.work_dir}/{LOCK_DIR_NAME}"
    result = transport.run(["sh", "-c", _READ, "sh", path], timeout=LOCK_TIMEOUT_S)
    if result.exit_code is None:
        raise HostUnreachable(f"{host.name}: reading the lock timed out", field=f"hosts.{host.name}", host=host.name)
    return _parse(host.name, result.output)


def refuse_if_locked(transport_for: Callable[[Host], Transport], hosts: list[Host], stale_after_s: float,
                     warn: Callable[[str], None]) -> None:
    """For `bench`: HostLocked when a live campaign holds one of these hosts. The
    hosts are read in parallel (this also opens each one's connection for what
    follows); one that cannot be reached ends it here as it would end the
    preflight (HostUnreachable, naming it), not after a second connect window."""
    def read(host: Host) -> LockState | None:
        try:
            return read_lock(transport_for(host), host)
        except HostUnreachable:
            raise
        except HarnessError:
            return None

    for host, state in zip(hosts, run_all(read, hosts)):
        if state is None or not state.held:
            continue
        reason = stale_reason(state.holder, state.mtime, stale_after_s)
        who = state.holder.describe() if state.holder else "an unreadable holder"
        if reason is None:
            raise HostLocked(f"{host.name} is locked by {who}; run when it has ended", field=f"hosts.{host.name}")
        warn(f"{host.name}: ignoring a stale campaign lock ({reason}), held by {who}")
