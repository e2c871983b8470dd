"""The quarantine list: hosts kept out of the next jobs, next to the history
(results/quarantine.json, written atomically under a lock, since a bench run and
a campaign may both update it).

A host is quarantined when a severe code occurs once, or any code occurs a
second time within the window (a straggler only where the policy counts it:
settings.py; the occurrences of the window are kept in the
file, so bench runs and campaigns count together). An entry expires (24 h by
default); an expired entry is ignored, shown as expired, and replaced by the
next quarantine of its host. `release` removes the entry and forgets the
host's counted occurrences.
"""

from __future__ import annotations

import datetime as dt
import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from harness.core.record import write_atomic
from harness.errors import UserError
from harness.faults.codes import Fault, code_line, now_iso
from harness.faults.settings import DEFAULT_EXPIRY_S as DEFAULT_EXPIRY_S
from harness.faults.settings import DEFAULT_WINDOW_S as DEFAULT_WINDOW_S
from harness.faults.settings import QuarantinePolicy as QuarantinePolicy

QUARANTINE_FILE = "quarantine.json"


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


class QuarantineEntry(BaseModel):
    host: str
    codes: list[str]
    evidence: list[str] = Field(default_factory=list)
    since: str = Field(default_factory=now_iso)
    until: str | None = None  # None: until released
    by: Literal["auto", "manual"] = "auto"
    reason: str = ""  # one line
    run_ids: list[str] = Field(default_factory=list)

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.until is not None and _parse(self.until) <= (now or dt.datetime.now(dt.timezone.utc))

    def describe(self) -> str:
        until = f", until {self.until}" if self.until else ", until released"
        return f"{self.host}: {', '.join(self.codes) or 'manual'} since {self.since}{until}: {self.reason}"


class QuarantineList(BaseModel):
    entries: dict[str, QuarantineEntry] = Field(default_factory=dict)  # host -> its entry
    recent: list[Fault] = Field(default_factory=list)  # occurrences inside the window, counted for "twice"

    def active(self, host: str, now: dt.datetime | None = None) -> QuarantineEntry | None:
        entry = self.entries.get(host)
        return entry if entry is not None and not entry.expired(now) else None

    def active_hosts(self, now: dt.datetime | None = None) -> dict[str, QuarantineEntry]:
        return {host: entry for host, entry in self.entries.items() if not entry.expired(now)}


class HostQuarantined(UserError):
    """bench refused a quarantined host (exit 2)."""


class QuarantineStore:
    def __init__(self, results: Path) -> None:
        self.path = results / QUARANTINE_FILE
        self._lock_path = results / f".{QUARANTINE_FILE}.lock"

    def load(self) -> QuarantineList:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return QuarantineList()
        except OSError as exc:
            raise UserError(f"cannot read the quarantine list: {exc.strerror or exc}", file=str(self.path)) from exc
        try:
            return QuarantineList.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise UserError(f"not a quarantine list written by this harness ({where}: {first['msg']}); "
                            "fix or remove it", file=str(self.path)) from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def update(self, change: Callable[[QuarantineList], None]) -> QuarantineList:
        """Load, change and write back under the lock; the list as written."""
        with self._locked():
            listed = self.load()
            change(listed)
            write_atomic(self.path, listed.model_dump_json(indent=2))
            return listed

    def record(self, faults: list[Fault], policy: QuarantinePolicy = QuarantinePolicy(),
               now: dt.datetime | None = None) -> list[QuarantineEntry]:
        """Count these occurrences and quarantine what they decide; the entries
        this call created (hosts already quarantined are not created again).
        Codes the policy leaves uncounted (a straggler, by default) are skipped."""
        faults = [fault for fault in faults if fault.code not in policy.uncounted]
        if not faults:
            return []
        moment = now or dt.datetime.now(dt.timezone.utc)
        created: list[QuarantineEntry] = []

        def change(listed: QuarantineList) -> None:
            horizon = moment - dt.timedelta(seconds=policy.window_s)
            listed.recent = [f for f in listed.recent if _parse(f.time) >= horizon] + list(faults)
            for host in dict.fromkeys(f.host for f in faults):
                if listed.active(host, moment) is not None:
                    continue
                mine = [f for f in listed.recent if f.host == host]
                severe = [f for f in faults if f.host == host and f.severe]
                if not severe and len(mine) < 2:
                    continue
                deciding = severe or mine
                why = (f"severe: {code_line(severe[0].code)}" if severe
                       else f"{len(mine)} faults within {policy.window_s / 3600:g} h")
                entry = QuarantineEntry(
                    host=host, codes=list(dict.fromkeys(f.code for f in deciding)),
                    evidence=[f.evidence for f in deciding][-5:], since=_stamp(moment),
                    until=_stamp(moment + dt.timedelta(seconds=policy.expiry_s)) if policy.expiry_s else None,
                    by="auto", reason=why,
                    run_ids=list(dict.fromkeys(f.run_id for f in deciding if f.run_id)))
                listed.entries[host] = entry
                created.append(entry)

        self.update(change)
        return created

    def add(self, host: str, reason: str, expiry_s: float | None = DEFAULT_EXPIRY_S,
            now: dt.datetime | None = None) -> QuarantineEntry:
        moment = now or dt.datetime.now(dt.timezone.utc)
        entry = QuarantineEntry(host=host, codes=[], evidence=[reason], since=_stamp(moment), by="manual",
                                until=_stamp(moment + dt.timedelta(seconds=expiry_s)) if expiry_s else None,
                                reason=reason)
        self.update(lambda listed: listed.entries.__setitem__(host, entry))
        return entry

    def release(self, host: str) -> QuarantineEntry | None:
        """Remove the host's entry and its counted occurrences; the entry removed, or None."""
        removed: list[QuarantineEntry] = []

        def change(listed: QuarantineList) -> None:
            entry = listed.entries.pop(host, None)
            if entry is not None:
                removed.append(entry)
            listed.recent = [f for f in listed.recent if f.host != host]

        self.update(change)
        return removed[0] if removed else None


def refuse_quarantined(results: Path, hosts: list[str], now: dt.datetime | None = None,
                       listed: QuarantineList | None = None) -> None:
    """HostQuarantined naming the first quarantined host, its codes and since when;
    `listed`: the list as the caller already read it from results (else read here)."""
    listed = listed if listed is not None else QuarantineStore(results).load()
    for host in hosts:
        entry = listed.active(host, now)
        if entry is not None:
            raise HostQuarantined(
                f"host {host} is quarantined ({', '.join(entry.codes) or 'by hand'}) since {entry.since}"
                f"{f' until {entry.until}' if entry.until else ''}: {entry.reason}; "
                f"`python -m harness quarantine release {host}` lets it run again, or pass --ignore-quarantine",
                file=str(QuarantineStore(results).path))
