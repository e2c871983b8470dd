"""The quarantine against the test hosts (real sshd, real Docker): a host put in
quarantine with `quarantine add` is refused by bench (exit 2, naming it, nothing
created for the run, nothing started), runs again after `quarantine release`,
and an expired entry holds nothing back; a host whose work_dir cannot be made
earns BENCH-H03 at each preflight and is quarantined the second time."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import REPO_ROOT
from harness.faults.quarantine import QuarantineEntry, QuarantineList, QuarantineStore

TINY = "bs=2,image_size=32,num_classes=10,max_steps=2"


def harness(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def bench(hosts: Path, results: Path, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return harness("bench", "--case", "resnet50", "--vendor", "cpu", "--hosts", str(hosts), "--results", str(results),
                   "--run-id", run_id, *args)


def containers_of(run_id: str) -> list[str]:
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bench.run_id={run_id}"],
                            capture_output=True, text=True, timeout=30, check=True)
    return listed.stdout.split()


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_quarantined_host_is_refused_until_released_and_an_expired_entry_is_ignored(
        make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    hosts, results = make_hosts_yaml(hosts=["node1"]), tmp_path / "results"
    added = harness("quarantine", "add", "node1", "--reason", "fan replaced, burn-in pending",
                    "--results", str(results))
    assert added.returncode == 0, added.stderr
    since = QuarantineStore(results).load().entries["node1"].since

    run_id = "quar-node1"
    refused = bench(hosts, results, run_id, "--config", "1x1", "--fix-hp", TINY)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = one_line(refused.stderr)
    assert "host node1 is quarantined (by hand)" in message and since in message and "fan replaced" in message
    assert not (results / run_id).exists() and containers_of(run_id) == []

    released = harness("quarantine", "release", "node1", "--results", str(results))
    assert released.returncode == 0, released.stderr
    ran = bench(hosts, results, run_id, "--config", "1x1", "--fix-hp", TINY)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    recorded = json.loads((results / run_id / "resnet50" / "1x1" / "results.json").read_text())
    assert recorded["status"] == "success" and recorded["faults"] == []

    # An entry whose `until` has passed: shown as expired, ignored by bench.
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=30)
    expired = QuarantineEntry(host="node1", codes=["BENCH-G03"], evidence=["device 0: uncorrected ECC 0 -> 2"],
                              since=past.isoformat(timespec="seconds"),
                              until=(past + dt.timedelta(hours=24)).isoformat(timespec="seconds"), reason="severe")
    (results / "quarantine.json").write_text(QuarantineList(entries={"node1": expired}).model_dump_json())
    listed = harness("quarantine", "list", "--results", str(results))
    assert listed.returncode == 0 and "expired" in listed.stdout
    again = bench(hosts, results, "quar-expired", "--config", "1x1", "--fix-hp", TINY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "node1 is quarantined" not in again.stderr and "--ignore-quarantine" not in again.stderr
    assert containers_of(run_id) == [] and containers_of("quar-expired") == []


def test_an_unusable_work_dir_is_h03_and_quarantines_the_host_the_second_time(
        make_hosts_yaml: Callable[..., Path], tmp_path: Path) -> None:
    # node2's sshd with a work_dir under /proc: `mkdir -p` fails there, even as root.
    hosts = make_hosts_yaml(hosts=["node1"], extra_hosts=[{"name": "badwork", "address": "127.0.0.3",
                                                           "work_dir": "/proc/bench-unusable"}])
    results = tmp_path / "results"
    first = bench(hosts, results, "quar-h03-a", "--config", "2x1", "--fix-hp", TINY)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "hosts.badwork.work_dir" in first.stderr and "fault: badwork: BENCH-H03" in one_line(first.stderr)
    assert "badwork" not in QuarantineStore(results).load().entries
    assert not (results / "quar-h03-a").exists() and containers_of("quar-h03-a") == []

    second = bench(hosts, results, "quar-h03-b", "--config", "2x1", "--fix-hp", TINY)
    assert second.returncode == 2
    assert "quarantined: badwork: BENCH-H03" in one_line(second.stderr)
    entry = QuarantineStore(results).load().entries["badwork"]
    assert entry.codes == ["BENCH-H03"] and entry.run_ids == ["quar-h03-a", "quar-h03-b"]

    third = bench(hosts, results, "quar-h03-c", "--config", "2x1", "--fix-hp", TINY)
    assert third.returncode == 2 and "host badwork is quarantined (BENCH-H03)" in one_line(third.stderr)
    assert "fault:" not in third.stderr  # refused before the hosts were asked anything
