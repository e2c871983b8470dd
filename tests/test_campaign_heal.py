"""Spares, quarantine decisions and the pairwise search for the bad node,
without hosts: substitution and pairing as pure functions over the inventory's
models, the suite's `spares`/`quarantine` checked, and the campaign's Healer
placing a job with a lock function that refuses the hosts a test names (the
quarantine list is a real file in tmp_path)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from campaignkit import GOLDEN_HOSTS, TINY, checked, write_suite
from rich.console import Console

from harness.campaign.bisect import decide, faults, pair_rounds
from harness.campaign.check import PlannedEntry
from harness.campaign.heal import Healer
from harness.campaign.spares import check_spares, on_hosts, substitute
from harness.campaign.state import Attempt, Bisection, CampaignState, PairRun, PairVerdict
from harness.campaign.suite import SuiteError, load_suite
from harness.core.inventory import Host, load_inventory
from harness.core.results import NodeOutcome, RunResult
from harness.errors import HarnessError, HostUnreachable
from harness.faults.codes import Fault
from harness.faults.quarantine import QuarantinePolicy, QuarantineStore
from harness.hostlock import HostLocked


def host(name: str, devices: int = 8) -> Host:
    return Host(name=name, address=f"10.0.0.{len(name)}", devices=devices)


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


# -- spares: which spare goes where ---------------------------------------------------
def test_a_quarantined_host_is_replaced_in_its_place_by_a_spare_with_its_device_count() -> None:
    job = [host("n1"), host("n2"), host("n3")]
    spares = [host("s4", devices=4), host("s8")]
    placed = substitute(job, spares, {"n2"})
    assert names(placed.hosts) == ["n1", "s8", "n3"]  # node order kept, s4 has the wrong device count
    assert placed.replaced == {"n2": "s8"} and placed.missing == []


def test_a_spare_is_not_used_twice_by_one_job_and_an_unusable_spare_is_passed_over() -> None:
    job = [host("n1"), host("n2"), host("n3")]
    spares = [host("s1"), host("s2"), host("s3")]
    placed = substitute(job, spares, {"n1", "n3", "s1"})
    assert names(placed.hosts) == ["s2", "n2", "s3"] and placed.replaced == {"n1": "s2", "n3": "s3"}
    short = substitute(job, [host("s1")], {"n1", "n3"})
    assert names(short.hosts) == ["s1", "n2", "n3"] and short.missing == ["n3"]
    assert substitute(job, spares, set()).hosts == job


def test_a_spare_that_is_already_one_of_the_jobs_hosts_is_not_taken() -> None:
    placed = substitute([host("n1"), host("n2")], [host("n2"), host("s1")], {"n1"})
    assert names(placed.hosts) == ["s1", "n2"]


def four_hosts(tmp_path: Path, devices: tuple[int, ...] = (8, 8, 8, 8)) -> Path:
    data = yaml.safe_load(GOLDEN_HOSTS.read_text())
    template = data["hosts"][0]
    data["hosts"] = [{**template, "name": f"node{i + 1}", "address": f"10.0.0.{i + 1}", "devices": count}
                     for i, count in enumerate(devices)]
    path = tmp_path / "hosts4.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def suite_on(tmp_path: Path, jobs: list[dict[str, Any]], **top: object) -> Path:
    path = write_suite(tmp_path, jobs, **top)
    data = yaml.safe_load(path.read_text())
    data["hosts"] = str(four_hosts(tmp_path))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spares_of(path: Path) -> list[Host]:
    loaded = load_suite(path)
    return check_spares(loaded, load_inventory(loaded.inventory), checked(path))


def test_the_suite_names_its_spares_from_the_inventory_and_a_job_may_not_run_on_one(tmp_path: Path) -> None:
    job = {"case": "resnet50", "config": "2x1", "fix_hp": TINY}
    assert names(spares_of(suite_on(tmp_path, [job], spares=["node4", "node3"]))) == ["node4", "node3"]
    with pytest.raises(SuiteError) as unknown:
        spares_of(suite_on(tmp_path, [job], spares=["node9"]))
    assert unknown.value.exit_code == 2 and unknown.value.field == "spares"
    assert "unknown host 'node9'" in str(unknown.value) and "node1, node2, node3, node4" in str(unknown.value)
    with pytest.raises(SuiteError) as used:
        spares_of(suite_on(tmp_path, [job, {**job, "hosts": ["node3", "node4"]}], spares=["node4"]))
    assert "spares" in str(used.value) and "'node4' is a spare but job 2 (resnet50 cpu 2x1" in str(used.value)
    with pytest.raises(SuiteError) as twice:
        load_suite(suite_on(tmp_path, [job], spares=["node3", "node3"]))
    assert twice.value.field == "spares" and "'node3' is listed twice" in str(twice.value)


def test_the_suites_quarantine_policy_wins_over_the_inventorys(tmp_path: Path) -> None:
    job = {"case": "resnet50", "config": "1x1", "fix_hp": TINY}
    settings = load_suite(write_suite(tmp_path, [job], quarantine={"window": "30m", "expiry": "2h"})).suite.quarantine
    assert settings is not None and (settings.policy().window_s, settings.policy().expiry_s) == (1800.0, 7200.0)
    assert load_suite(write_suite(tmp_path, [job])).suite.quarantine is None  # the inventory's cluster.quarantine
    site = QuarantinePolicy(window_s=60.0, expiry_s=None)
    state = CampaignState(name="n", stamp="s", suite="x", inventory="h", units=[])
    unset = load_suite(write_suite(tmp_path, [job])).suite
    assert Healer(state, unset, [], tmp_path, lambda host: None, print, site).policy == site
    never = load_suite(write_suite(tmp_path, [job], quarantine={"expiry": "never"})).suite
    assert Healer(state, never, [], tmp_path, lambda host: None, print, site).policy.expiry_s is None
    with pytest.raises(SuiteError) as bad:
        load_suite(write_suite(tmp_path, [job], quarantine={"window": "soon"}))
    assert bad.value.exit_code == 2 and bad.value.field == "quarantine.window"


def test_a_checked_job_moved_onto_other_hosts_keeps_its_order(tmp_path: Path) -> None:
    (planned,) = checked(suite_on(tmp_path, [{"case": "resnet50", "config": "2x1", "fix_hp": TINY}]))
    inventory = load_inventory(load_suite(suite_on(tmp_path, [{"case": "resnet50", "config": "2x1"}])).inventory)
    moved = on_hosts(planned, [inventory.hosts[0], inventory.hosts[3]])
    assert names(moved.hosts) == ["node1", "node4"] and names(moved.inventory.hosts)[:2] == ["node1", "node4"]
    assert names(planned.hosts) == ["node1", "node2"]  # the checked job itself is unchanged


# -- pairs and the common host --------------------------------------------------------
def test_pairing_rounds() -> None:
    assert pair_rounds(["a", "b", "c", "d"], None) == [[("a", "b"), ("c", "d")], [("b", "c"), ("d", "a")]]
    assert pair_rounds(["a", "b", "c"], "s") == [[("a", "b"), ("c", "s")], [("b", "c"), ("s", "a")]]
    assert pair_rounds(["a", "b", "c"], None) == [[("a", "b"), ("c", "a")], [("b", "c")]]  # (a, b) not twice
    assert pair_rounds(["a", "b"], "s") == [[("a", "s"), ("b", "s")]]
    assert pair_rounds(["a", "b"], None) == []


def searched(hosts: list[str], verdicts: dict[tuple[str, str], PairVerdict]) -> Bisection:
    pairs = [PairRun(hosts=list(pair), run_id=f"r-pair{i + 1}", verdict=verdict,
                     peak_busbw_gbps=0.1 if verdict == "slow" else 5.0, detail=verdict)
             for i, (pair, verdict) in enumerate(verdicts.items())]
    return decide(Bisection(job=0, run_id="r", trigger="below the bar", hosts=hosts, min_busbw_gbps=1.0,
                            pairs=pairs))


def test_the_host_common_to_every_slow_pair_is_named_f02_and_to_every_failed_pair_f03() -> None:
    slow = searched(["a", "b", "c", "d"], {("a", "b"): "ok", ("c", "d"): "slow", ("b", "c"): "ok", ("d", "a"): "slow"})
    assert (slow.named, slow.code, slow.suspects) == ("d", "BENCH-F02", [])
    failed = searched(["a", "b", "c", "d"], {("a", "b"): "failed", ("c", "d"): "ok", ("b", "c"): "failed",
                                             ("d", "a"): "ok"})
    assert (failed.named, failed.code) == ("b", "BENCH-F03")
    with_spare = searched(["a", "b"], {("a", "s"): "ok", ("b", "s"): "slow"})
    assert (with_spare.named, with_spare.code) == ("b", "BENCH-F02")


def test_no_single_common_host_names_suspects_or_nobody() -> None:
    two = searched(["a", "b", "c", "d"], {("a", "b"): "slow", ("c", "d"): "slow", ("b", "c"): "slow",
                                          ("d", "a"): "slow"})
    assert two.named is None and two.suspects == ["a", "b", "c", "d"] and "none is quarantined" in two.note
    fine = searched(["a", "b", "c", "d"], {("a", "b"): "ok", ("c", "d"): "ok"})
    assert fine.named is None and fine.suspects == [] and "no host to name" in fine.note
    alone = searched(["a", "b"], {})
    assert alone.named is None and alone.suspects == ["a", "b"]
    assert alone.note == "2 hosts and no spare to pair them with: a and b are suspects; neither is quarantined"
    assert faults(alone) == [] and faults(two) == []


def test_the_named_host_is_quarantined_and_suspects_are_not(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    named = searched(["a", "b"], {("a", "s"): "ok", ("b", "s"): "slow"})
    found = faults(named)
    assert [(f.host, f.code, f.run_id) for f in found] == [("b", "BENCH-F02", "r-pair2"), ("b", "BENCH-F02", "r")]
    (entry,) = store.record(found)
    assert entry.host == "b" and entry.codes == ["BENCH-F02"] and "r-pair2" in entry.run_ids
    assert store.record(faults(searched(["c", "d"], {}))) == []
    assert set(store.load().active_hosts()) == {"b"}


# -- the Healer: placing a job, counting its faults ---------------------------------------
class Locks:
    """A lock function that refuses the hosts it is told to, as HostLocks would."""

    def __init__(self, refuse: dict[str, HarnessError] | None = None) -> None:
        self.refuse = refuse or {}
        self.taken: list[str] = []

    def __call__(self, target: Host) -> None:
        if target.name in self.refuse:
            raise self.refuse[target.name]
        self.taken.append(target.name)


def healer_for(tmp_path: Path, spares: list[str], locks: Callable[[Host], None],
               config: str = "2x1") -> tuple[Healer, PlannedEntry, CampaignState, list[str]]:
    path = suite_on(tmp_path, [{"case": "resnet50", "config": config, "fix_hp": TINY}], spares=spares)
    loaded = load_suite(path)
    inventory = load_inventory(loaded.inventory)
    planned = checked(path)
    state = CampaignState(name="nightly", stamp="x", suite=str(path), inventory=str(loaded.inventory), units=[])
    events: list[str] = []
    healer = Healer(state, loaded.suite, check_spares(loaded, inventory, planned), tmp_path / "results",
                    locks, events.append)
    return healer, planned[0], state, events


def test_a_quarantined_host_runs_on_the_spare_and_the_attempt_says_which_replaced_which(tmp_path: Path) -> None:
    locks = Locks()
    healer, planned, state, events = healer_for(tmp_path, ["node3", "node4"], locks)
    QuarantineStore(tmp_path / "results").record([Fault(host="node2", code="BENCH-G03", evidence="ecc 0 -> 2")])
    attempt = Attempt(number=1, run_id="n-j1-a1")
    placement = healer.place(planned, attempt)
    assert names(placement.planned.hosts) == ["node1", "node3"] and placement.skipped is None
    assert attempt.hosts == ["node1", "node3"] and attempt.replaced == {"node2": "node3"}
    assert locks.taken == ["node1", "node3"]  # the quarantined host is not even locked
    assert any("node2 is quarantined since" in e and "spare node3 takes its place (node 1)" in e for e in events)
    (said,) = placement.replacements
    assert said.startswith("spare node3 in place of node2: node2 is quarantined since ")


def test_an_unreachable_host_is_replaced_and_its_fault_recorded(tmp_path: Path) -> None:
    locks = Locks({"node1": HostUnreachable("node1: connection refused"),
                   "node3": HarnessError("node3: cannot write the lock in /scratch/bench: No space left")})
    healer, planned, state, _ = healer_for(tmp_path, ["node3", "node4"], locks)
    attempt = Attempt(number=1, run_id="n-j1-a1")
    placement = healer.place(planned, attempt)
    assert attempt.hosts == ["node4", "node2"] and attempt.replaced == {"node1": "node4"}
    assert not placement.problems and not placement.skipped
    assert [(f.host, f.code) for f in attempt.faults] == [("node1", "BENCH-H01"), ("node3", "BENCH-H03")]
    assert healer.record(attempt, failed_run()) == []  # once each: counted, nobody quarantined yet
    second = Attempt(number=1, run_id="n-j2-a1")
    healer.place(planned, second)
    created = healer.record(second, failed_run())
    assert sorted(e.host for e in created) == ["node1", "node3"]  # twice within the window
    assert [e.host for e in state.quarantined] == [e.host for e in created]


def test_a_spare_held_by_another_controller_is_passed_over(tmp_path: Path) -> None:
    locks = Locks({"node1": HostUnreachable("node1: timed out"),
                   "node3": HostLocked("node3 is locked by campaign other-night; wait for it to end, or stop it")})
    healer, planned, _, _ = healer_for(tmp_path, ["node3", "node4"], locks)
    attempt = Attempt(number=1, run_id="n-j1-a1")
    healer.place(planned, attempt)
    assert attempt.replaced == {"node1": "node4"} and [f.host for f in attempt.faults] == ["node1"]


def failed_run(*found: Fault) -> RunResult:
    return RunResult(run_id="r", case="resnet50", vendor="cpu", accelerator="cpu", nnodes=2, nproc_per_node=1,
                     precision="fp32", fix_hp="/", status="failed", failure_kind="infra", faults=list(found))


def test_with_no_spare_left_a_quarantined_host_skips_the_job_and_an_unreachable_one_is_retried(tmp_path: Path) -> None:
    healer, planned, _, _ = healer_for(tmp_path, [], Locks({"node1": HostUnreachable("node1: timed out")}))
    attempt = Attempt(number=1, run_id="n-j1-a1")
    placement = healer.place(planned, attempt)
    assert placement.skipped is None and placement.problems == ["node1: lock not taken: node1: timed out"]
    QuarantineStore(tmp_path / "results").add("node2", "fan broken")
    skipped = Attempt(number=2, run_id="n-j1-a2")
    placement = healer.place(planned, skipped)
    assert skipped.no_spare == ["node2"] and placement.skipped is not None
    assert placement.skipped.startswith("skipped: no spare left for quarantined host(s) node2 (node2: manual since ")
    assert "fan broken" in placement.skipped


def test_the_runs_own_faults_count_and_a_severe_one_quarantines_at_once(tmp_path: Path) -> None:
    healer, _, state, events = healer_for(tmp_path, [], Locks())
    attempt = Attempt(number=1, run_id="n-j1-a1",
                      faults=[Fault(host="node1", code="BENCH-H04", evidence="leftover", run_id="n-j1-a1")])
    created = healer.record(attempt, failed_run(Fault(host="node2", code="BENCH-G01", evidence="7 of 8 devices",
                                                      run_id="n-j1-a1")))
    assert [e.host for e in created] == ["node2"] and [f.code for f in attempt.faults] == ["BENCH-H04", "BENCH-G01"]
    assert state.quarantined == created and any(e.startswith("quarantined node2: BENCH-G01") for e in events)


def test_a_job_is_searched_once_per_set_of_hosts_and_only_for_an_infra_failure_naming_no_host(tmp_path: Path) -> None:
    healer, planned, state, _ = healer_for(tmp_path, [], Locks())
    assert healer.wants_bisect(planned, None)
    ran = failed_run()
    assert not healer.wants_bisect(planned, ran)  # refused before anything started: nothing measured
    ran.nodes = [NodeOutcome(host=h, node_rank=i, container="c", exit_code=None, log_dir="l")
                 for i, h in enumerate(("node1", "node2"))]
    assert healer.wants_bisect(planned, ran)
    ran.faults = [Fault(host="node1", code="BENCH-H02", evidence="lost")]
    assert not healer.wants_bisect(planned, ran)
    state.bisections.append(Bisection(job=0, run_id="r", trigger="t", hosts=["node2", "node1"]))
    assert not healer.wants_bisect(planned, None)
    (tmp_path / "one").mkdir()
    one, single, _, _ = healer_for(tmp_path / "one", [], Locks(), config="1x1")
    assert not one.wants_bisect(single, None)


def test_pair_runs_refused_by_the_preflight_are_failed_pairs(tmp_path: Path) -> None:
    """bisect() through a backend that refuses every run: each pair is its own
    run id and `failed` with the reason; with two hosts and a spare, the spare is
    in every failed pair and is named."""
    from harness.campaign.bisect import bisect

    class Refusing:
        uses_host_list = True

        def plan(self, *args: object) -> None:
            raise HostUnreachable("node3: connection refused")

    healer, planned, _, _ = healer_for(tmp_path, ["node3"], Locks())
    del healer
    inventory = planned.inventory
    spare = [h for h in load_inventory(Path(inventory.source)).hosts if h.name == "node3"][0]
    found = bisect(planned, planned.hosts, spare, "n-j1-a1", "below", 1.0, None,
                   Refusing(), tmp_path / "results", Console(file=io.StringIO()))  # type: ignore[arg-type]
    assert [p.hosts for p in found.pairs] == [["node1", "node3"], ["node2", "node3"]]
    assert all(p.verdict == "failed" and p.run_id.startswith("n-j1-a1-pair") for p in found.pairs)
    assert found.pairs[0].detail == "could not start: node3: connection refused"
    assert found.named == "node3" and found.code == "BENCH-F03"


def test_an_unreadable_quarantine_list_keeps_no_host_out_and_says_so(tmp_path: Path) -> None:
    healer, planned, _, events = healer_for(tmp_path, ["node3"], Locks())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "quarantine.json").write_text("{not json")
    attempt = Attempt(number=1, run_id="n-j1-a1")
    assert names(healer.place(planned, attempt).planned.hosts) == ["node1", "node2"]
    assert any("not a quarantine list written by this harness" in e and "no host is kept out" in e for e in events)


def test_faults_of_one_check_count_once_and_the_next_attempt_quarantines(tmp_path: Path) -> None:
    healer, _, _, _ = healer_for(tmp_path, [], Locks())
    three = [Fault(host="node1", code="BENCH-G02", evidence=f"pid {pid}", run_id="n-j1-a1") for pid in (1, 2, 3)]
    first = Attempt(number=1, run_id="n-j1-a1", faults=three)
    assert healer.record(first, failed_run()) == [] and len(first.faults) == 3  # all kept in the state
    again = [Fault(host="node1", code="BENCH-G02", evidence="pid 1", run_id="n-j1-a2")]
    (entry,) = healer.record(Attempt(number=2, run_id="n-j1-a2", faults=again), failed_run())
    assert entry.host == "node1" and entry.run_ids == ["n-j1-a1", "n-j1-a2"]
