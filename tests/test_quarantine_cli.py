"""`python -m harness quarantine list | add | release` on a real results folder, and
bench's refusal of a quarantined host before anything touches it (a dry run
warns; an expired entry is ignored). Subprocesses, as a user runs them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import yaml

from harness import REPO_ROOT
from harness.faults.codes import Fault
from harness.faults.quarantine import QuarantineEntry, QuarantineList, QuarantineStore


def harness(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def quarantine(results: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return harness("quarantine", *argv, "--results", str(results))


def local_inventory(tmp_path: Path) -> Path:
    """One host on this machine whose work_dir does not exist yet: a run that touched it would make it."""
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"hosts": [{"name": "lab1", "address": "127.0.0.1", "transport": "local",
                                               "devices": 1, "work_dir": str(tmp_path / "work")}]}))
    return path


def bench(hosts: Path, results: Path, run_id: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return harness("bench", "--case", "resnet50", "--vendor", "cpu", "--config", "1x1", "--hosts", str(hosts),
                   "--results", str(results), "--run-id", run_id, *args, timeout=timeout)


def test_add_list_release_and_their_exit_statuses(tmp_path: Path) -> None:
    results = tmp_path / "results"
    empty = quarantine(results, "list")
    assert empty.returncode == 0 and "no host is quarantined" in empty.stdout + empty.stderr

    added = quarantine(results, "add", "n1", "--reason", "fan  broken\tagain", "--expiry", "2h")
    assert added.returncode == 0, added.stderr
    entry = QuarantineStore(results).load().entries["n1"]
    assert entry.by == "manual" and entry.reason == "fan broken again" and entry.codes == []
    hours = (dt.datetime.fromisoformat(entry.until or "") - dt.datetime.fromisoformat(entry.since)).total_seconds()
    assert hours == 2 * 3600
    forever = quarantine(results, "add", "n2", "--reason", "waiting for a new board", "--expiry", "never")
    assert forever.returncode == 0 and QuarantineStore(results).load().entries["n2"].until is None

    listed = quarantine(results, "list")
    assert listed.returncode == 0
    rows = [line for line in listed.stdout.splitlines() if "│ n" in line]
    assert len(rows) == 2 and "active" in rows[0] and "fan broken again" in rows[0] and "manual" in rows[0]
    assert "until released" in rows[1]

    unknown = quarantine(results, "release", "n9")
    assert unknown.returncode == 2 and "n9 is not in the quarantine list (listed: n1, n2)" in unknown.stderr
    released = quarantine(results, "release", "n1")
    assert released.returncode == 0 and "released n1" in released.stdout + released.stderr
    assert set(QuarantineStore(results).load().entries) == {"n2"}


def test_bad_input_is_exit_2_with_one_line(tmp_path: Path) -> None:
    results = tmp_path / "results"
    bad_expiry = quarantine(results, "add", "n1", "--reason", "x", "--expiry", "soon")
    assert bad_expiry.returncode == 2 and "--expiry" in bad_expiry.stderr and "never" in bad_expiry.stderr
    no_reason = quarantine(results, "add", "n1", "--reason", "  ")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    results.mkdir()
    (results / "quarantine.json").write_text('{"entries": {"n1": {"codes": 3}}}')
    damaged = quarantine(results, "list")
    assert damaged.returncode == 2 and "quarantine.json" in damaged.stderr and "Traceback" not in damaged.stderr
    assert not (results / "n1").exists()


def test_counted_faults_of_a_host_not_quarantined_are_released_too(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.record([Fault(host="n3", code="BENCH-G05", evidence="NVRM: Xid 13", run_id="r1")])
    assert "n3" not in store.load().entries
    released = quarantine(tmp_path, "release", "n3")
    assert released.returncode == 0 and "1 counted fault(s) are forgotten" in released.stdout + released.stderr
    assert store.load().recent == []


def _expired(host: str) -> QuarantineList:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=30)
    entry = QuarantineEntry(host=host, codes=["BENCH-G03"], evidence=["device 0: uncorrected ECC 0 -> 2"],
                            since=past.isoformat(timespec="seconds"),
                            until=(past + dt.timedelta(hours=24)).isoformat(timespec="seconds"), reason="severe")
    return QuarantineList(entries={host: entry})


def test_an_expired_entry_is_listed_as_expired(tmp_path: Path) -> None:
    tmp_path.joinpath("quarantine.json").write_text(_expired("n4").model_dump_json())
    listed = quarantine(tmp_path, "list")
    row = next(line for line in listed.stdout.splitlines() if "│ n4" in line)
    assert listed.returncode == 0 and "expired" in row and "BENCH-G03" in row and "uncorrected ECC" in row


def test_bench_refuses_a_quarantined_host_before_touching_it(tmp_path: Path) -> None:
    hosts, results = local_inventory(tmp_path), tmp_path / "results"
    assert quarantine(results, "add", "lab1", "--reason", "PSU replaced, burn-in pending").returncode == 0
    since = QuarantineStore(results).load().entries["lab1"].since

    refused = bench(hosts, results, "q-refused")
    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "host lab1 is quarantined" in message and since in message and "PSU replaced" in message
    assert "quarantine release lab1" in message and "--ignore-quarantine" in message
    assert not (results / "q-refused").exists() and not (tmp_path / "work").exists()

    # A dry run prints the plan and warns.
    dry = bench(hosts, results, "q-dry", "--dry-run")
    assert dry.returncode == 0 and "torchrun" in dry.stdout
    assert "quarantined: lab1" in " ".join(dry.stderr.split())
    assert not (tmp_path / "work").exists()


def test_an_expired_entry_does_not_hold_bench_back(tmp_path: Path) -> None:
    hosts, results = local_inventory(tmp_path), tmp_path / "results"
    results.mkdir()
    (results / "quarantine.json").write_text(_expired("lab1").model_dump_json())
    dry = bench(hosts, results, "q-expired", "--dry-run")
    assert dry.returncode == 0 and "quarantined" not in dry.stderr


def test_a_host_that_does_not_answer_bench_counts_and_is_quarantined_the_second_time(tmp_path: Path) -> None:
    # An ssh host on a closed loopback port: refused on every try until its 2 s connect window ends.
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({
        "cluster": {"known_hosts": str(tmp_path / "known_hosts"), "ssh_timeout_s": 2,
                    "connect_window_s": 2},
        "hosts": [{"name": "ghost", "address": "127.0.0.1", "port": 1, "user": "root", "devices": 1,
                   "work_dir": "/tmp/bench-ghost"}]}))
    results = tmp_path / "results"
    # Its first fault, an hour ago (inside the 12 h window).
    earlier = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat(timespec="seconds")
    QuarantineStore(results).record([Fault(host="ghost", code="BENCH-H01", evidence="no answer", run_id="r0",
                                           time=earlier)])
    failed = bench(hosts, results, "q-ghost")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    text = " ".join(failed.stderr.split())
    assert "fault: ghost: BENCH-H01" in text and "quarantined: ghost: BENCH-H01" in text
    assert not (results / "q-ghost").exists()
    saved = json.loads((results / "quarantine.json").read_text())
    assert saved["entries"]["ghost"]["run_ids"] == ["r0", "q-ghost"]

    again = bench(hosts, results, "q-ghost-2")
    assert again.returncode == 2 and "host ghost is quarantined (BENCH-H01)" in " ".join(again.stderr.split())


def test_a_straggler_counts_only_where_the_inventory_says_so(tmp_path: Path) -> None:
    from harness.core.inventory import Cluster

    slow = [Fault(host="n5", code="BENCH-S01", evidence="rank 1 score 0.7", run_id=f"r{i}") for i in (1, 2)]
    default = Cluster().quarantine.policy()
    assert QuarantineStore(tmp_path / "a").record(slow, default) == []
    assert QuarantineStore(tmp_path / "a").load().recent == []
    counted = Cluster.model_validate({"quarantine": {"stragglers": True, "window": "2h", "expiry": "never"}})
    created = QuarantineStore(tmp_path / "b").record(slow, counted.quarantine.policy())
    assert [(e.host, e.codes, e.until) for e in created] == [("n5", ["BENCH-S01"], None)]
