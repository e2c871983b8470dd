"""The quarantine list's rules over a real file: severe once, any code twice in
the window, expiry, release, and a damaged file named."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.faults.codes import CODES, Fault, xid_code
from harness.faults.quarantine import HostQuarantined, QuarantinePolicy, QuarantineStore, refuse_quarantined

T0 = dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.timezone.utc)


def _fault(host: str, code: str, at: dt.datetime = T0) -> Fault:
    return Fault(host=host, code=code, evidence=f"seen on {host}", run_id="r1", time=at.isoformat())


def test_a_severe_code_quarantines_at_once(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    created = store.record([_fault("n1", "BENCH-G03")], now=T0)
    assert [e.host for e in created] == ["n1"]
    entry = store.load().entries["n1"]
    assert entry.codes == ["BENCH-G03"] and entry.by == "auto" and entry.run_ids == ["r1"]
    assert entry.until == (T0 + dt.timedelta(hours=24)).isoformat()


def test_a_plain_code_quarantines_on_its_second_occurrence_inside_the_window(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    policy = QuarantinePolicy(window_s=3600)
    assert store.record([_fault("n1", "BENCH-H01")], policy, now=T0) == []
    later = T0 + dt.timedelta(hours=2)  # the first one left the window
    assert store.record([_fault("n1", "BENCH-H02", later)], policy, now=later) == []
    again = later + dt.timedelta(minutes=10)
    created = store.record([_fault("n1", "BENCH-G02", again)], policy, now=again)
    assert [e.codes for e in created] == [["BENCH-H02", "BENCH-G02"]]
    assert store.record([_fault("n1", "BENCH-G02", again)], policy, now=again) == []  # already in


def test_expired_entries_are_ignored_and_release_forgets_the_host(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.record([_fault("n1", "BENCH-G01")], QuarantinePolicy(expiry_s=60), now=T0)
    with pytest.raises(HostQuarantined, match=r"host n1 is quarantined \(BENCH-G01\) since 2026-12-06T01:00:00"):
        refuse_quarantined(tmp_path, ["n0", "n1"], now=T0 + dt.timedelta(seconds=30))
    refuse_quarantined(tmp_path, ["n1"], now=T0 + dt.timedelta(seconds=61))  # expired: ignored
    assert store.load().entries["n1"].expired(T0 + dt.timedelta(seconds=61))
    assert store.release("n1") is not None and store.release("n1") is None
    assert store.load().recent == []


def test_a_manual_entry_without_expiry_holds_until_released(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.add("n2", "fan noise", expiry_s=None, now=T0)
    with pytest.raises(HostQuarantined, match="by hand.*fan noise"):
        refuse_quarantined(tmp_path, ["n2"], now=T0 + dt.timedelta(days=365))


def test_a_damaged_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "quarantine.json").write_text('{"entries": {"n1": {"host": 3}}}')
    with pytest.raises(UserError, match=r"quarantine.json: not a quarantine list.*entries.n1"):
        QuarantineStore(tmp_path).load()


def test_xid_codes_split_reset_from_plain() -> None:
    assert xid_code("NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus.") == "BENCH-G04"
    assert xid_code("NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception") == "BENCH-G05"
    assert CODES["BENCH-G04"].severe and not CODES["BENCH-G05"].severe
