"""Finding the bad node: when a multi-node job fails the bandwidth gate, or fails
`infra` with no host named, the all-reduce case (cases/allreduce, as the gate
runs it) runs on pairs of the job's hosts, each pair its own recorded run
(<attempt>-pair<k>, results.json each):

- a round of disjoint pairs, then a second round that re-pairs them (the order
  turned by one); an odd host out is paired with a spare, or with node 0;
- two hosts and a spare: each is paired with the spare;
- two hosts and no spare: nothing to run; both are named suspects.

A pair is slow below the suite's `gates.min_busbw_gbps` and failed when its run
failed. The host common to every slow or failed pair and in no good one is named
(BENCH-F02 slow in every pair, BENCH-F03 failed in every pair), with one fault
per pair it spoiled and one for the job's own run: two occurrences, so the
quarantine takes it. Any other outcome names suspects, or nobody, and
quarantines no one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from harness.campaign.busbw_gate import CASE, TIMEOUT_S
from harness.campaign.state import Bisection, PairRun
from harness.core.backend import ClusterBackend
from harness.core.inventory import Host
from harness.core.job import make_job, parse_config_name
from harness.core.runner import run_job
from harness.core.watch import WatchLimits
from harness.errors import HarnessError
from harness.faults.codes import Fault

if TYPE_CHECKING:
    from harness.campaign.check import PlannedEntry

Pair = tuple[str, str]


def _disjoint(order: list[str]) -> list[Pair]:
    pairs = [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]
    if len(order) % 2:  # the one left over goes with node 0 of the order
        pairs.append((order[-1], order[0]))
    return pairs


def pair_rounds(hosts: list[str], spare: str | None) -> list[list[Pair]]:
    """The rounds of pairs to run; a pair already run in an earlier round is not run again."""
    if len(hosts) < 2:
        return []
    if len(hosts) == 2:
        return [[(hosts[0], spare), (hosts[1], spare)]] if spare else []
    order = hosts + [spare] if len(hosts) % 2 and spare else list(hosts)
    rounds = [_disjoint(order), _disjoint(order[1:] + order[:1])]
    seen: set[frozenset[str]] = set()
    kept: list[list[Pair]] = []
    for pairs in rounds:
        fresh = [pair for pair in pairs if frozenset(pair) not in seen]
        seen.update(frozenset(pair) for pair in fresh)
        if fresh:
            kept.append(fresh)
    return kept


def decide(bisection: Bisection) -> Bisection:
    """The named host (and its code) or the suspects, from the pairs' verdicts."""
    pairs = bisection.pairs
    if not pairs:
        bisection.suspects = list(bisection.hosts)
        bisection.note = (f"{len(bisection.hosts)} hosts and no spare to pair them with: "
                          f"{' and '.join(bisection.hosts)} are suspects; neither is quarantined")
        return bisection
    bad = [pair for pair in pairs if pair.verdict != "ok"]
    if not bad:
        bisection.note = "every pair reached the bar: no host to name"
        return bisection
    good_hosts = {host for pair in pairs if pair.verdict == "ok" for host in pair.hosts}
    common = set(bad[0].hosts).intersection(*(set(pair.hosts) for pair in bad[1:])) - good_hosts
    if len(common) == 1:
        (named,) = common
        failed = all(pair.verdict == "failed" for pair in bad)
        bisection.named = named
        bisection.code = "BENCH-F03" if failed else "BENCH-F02"
        bisection.note = (f"{named} is in every {'failed' if failed else 'slow or failed'} pair "
                          f"({len(bad)} of {len(pairs)}) and in no good one")
        return bisection
    suspects = sorted({host for pair in bad for host in pair.hosts} - good_hosts)
    bisection.suspects = suspects
    bisection.note = ("no single host is common to every slow or failed pair"
                      + (f": suspects {', '.join(suspects)}" if suspects else "") + "; none is quarantined")
    return bisection


def faults(bisection: Bisection) -> list[Fault]:
    """The named host's occurrences: one per pair it spoiled, one for the job's own run."""
    if bisection.named is None or bisection.code is None:
        return []
    found = [Fault(host=bisection.named, code=bisection.code, run_id=pair.run_id,
                   evidence=f"all-reduce pair {' + '.join(pair.hosts)} {pair.verdict}: {pair.detail}")
             for pair in bisection.pairs if pair.verdict != "ok" and bisection.named in pair.hosts]
    found.append(Fault(host=bisection.named, code=bisection.code, run_id=bisection.run_id,
                       evidence=f"common host of the pairwise runs after: {bisection.trigger}"[:300]))
    return found


def _verdict(run: PairRun, min_gbps: float | None) -> PairRun:
    if run.verdict == "ok" and min_gbps is not None and run.peak_busbw_gbps is not None \
            and run.peak_busbw_gbps < min_gbps:
        run.verdict = "slow"
        run.detail = f"peak bus bandwidth {run.peak_busbw_gbps:.3g} GB/s below {min_gbps:g}"
    return run


def run_pair(planned: PlannedEntry, hosts: list[Host], run_id: str, fix_hp: str | None, min_gbps: float | None,
             backend: ClusterBackend, results: Path, console: Console) -> PairRun:
    """The all-reduce case on two hosts, recorded as its own run."""
    entry = planned.entry
    nproc = parse_config_name(entry.config)[1]
    job = make_job(CASE, entry.vendor, planned.accelerator, f"2x{nproc}", fix_hp=fix_hp, timeout_s=TIMEOUT_S,
                   run_id=run_id)
    inventory = planned.inventory.model_copy(update={"hosts": hosts})
    names = [host.name for host in hosts]
    limits = WatchLimits.for_cluster(inventory.cluster, TIMEOUT_S, None)
    try:
        result = run_job(job, inventory, backend, results, console, limits=limits)
    except HarnessError as exc:  # refused by the preflight: nothing was measured
        return PairRun(hosts=names, run_id=run_id, verdict="failed",
                       detail=f"could not start: {str(exc).strip().splitlines()[0]}")
    peak = result.bandwidth.peak_busbw_gbps if result.bandwidth else None
    if result.status != "success" or peak is None:
        cause = (result.failure or "no bus bandwidth reported").strip().splitlines()[0]
        return PairRun(hosts=names, run_id=run_id, verdict="failed", peak_busbw_gbps=peak,
                       detail=f"{result.failure_kind or 'failed'}: {cause}"[:200])
    return _verdict(PairRun(hosts=names, run_id=run_id, verdict="ok", peak_busbw_gbps=peak,
                            detail=f"peak bus bandwidth {peak:.3g} GB/s"), min_gbps)


def bisect(planned: PlannedEntry, hosts: list[Host], spare: Host | None, run_id: str, trigger: str,
           min_gbps: float | None, fix_hp: str | None, backend: ClusterBackend, results: Path,
           console: Console) -> Bisection:
    """Every round of pairs run in turn, and the decision."""
    by_name = {host.name: host for host in [*hosts, *([spare] if spare else [])]}
    bisection = Bisection(job=planned.entry.index, run_id=run_id, trigger=trigger, hosts=[h.name for h in hosts],
                          min_busbw_gbps=min_gbps)
    count = 0
    for pairs in pair_rounds(bisection.hosts, spare.name if spare else None):
        for first, second in pairs:
            count += 1
            bisection.pairs.append(run_pair(planned, [by_name[first], by_name[second]], f"{run_id}-pair{count}",
                                            fix_hp, min_gbps, backend, results, console))
    return decide(bisection)
