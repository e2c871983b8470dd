"""How a campaign keeps one bad host from spoiling the night: before each
attempt the job's quarantined hosts, and the hosts whose lock cannot be taken
(unreachable: BENCH-H01; work dir unusable: BENCH-H03; held by another
controller), are replaced by spares (spares.py); after each attempt its faults
(the lock, the gates, the run's own, the pairwise runs) go through the
quarantine (results/quarantine.json) with the suite's policy, and the entries
this campaign made are kept in its state; a failed bandwidth gate, or an infra
failure that names no host, starts the pairwise search for the bad node
(bisect.py) once per set of hosts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from harness.campaign.bisect import bisect, faults
from harness.campaign.check import PlannedEntry
from harness.campaign.gates import first_line
from harness.campaign.spares import on_hosts, substitute
from harness.campaign.state import Attempt, Bisection, CampaignState
from harness.campaign.suite import Suite
from harness.core.backend import ClusterBackend
from harness.core.inventory import Host
from harness.core.results import RunResult
from harness.errors import HarnessError, HostUnreachable
from harness.faults.codes import Fault
from harness.faults.quarantine import QuarantineEntry, QuarantineList, QuarantinePolicy, QuarantineStore
from harness.hostlock import HostLocked


@dataclass
class Placement:
    """Where an attempt runs."""

    planned: PlannedEntry  # the job on its hosts, spares in place
    problems: list[str] = field(default_factory=list)  # lock lines of hosts no spare replaced (infra, retried)
    skipped: str | None = None  # quarantined hosts no spare was left for: the attempt is skipped (infra)
    replacements: list[str] = field(default_factory=list)  # "spare s in place of h: h is quarantined since ..."


class Healer:
    def __init__(self, state: CampaignState, suite: Suite, spares: list[Host], results: Path,
                 lock: Callable[[Host], None], event: Callable[[str], None],
                 site_policy: QuarantinePolicy = QuarantinePolicy()) -> None:
        self.state = state
        self.suite = suite
        self.spares = spares
        self.results = results
        self.store = QuarantineStore(results)
        self.policy = suite.quarantine.policy() if suite.quarantine is not None else site_policy
        self.lock = lock
        self.event = event

    # -- before an attempt ----------------------------------------------------------
    def _listed(self) -> QuarantineList:
        """The quarantine list; an empty one when it cannot be read (said), so the night goes on."""
        try:
            return self.store.load()
        except HarnessError as exc:
            self.event(f"warning: {first_line(str(exc))}; no host is kept out for it")
            return QuarantineList()

    def quarantined_now(self) -> set[str]:
        """The hosts the quarantine list keeps out now."""
        return set(self._listed().active_hosts())

    def place(self, planned: PlannedEntry, attempt: Attempt) -> Placement:
        """The job's hosts with every unusable one replaced by a spare where one is left."""
        listed = self._listed()
        quarantined: dict[str, QuarantineEntry] = {}
        for host in [*planned.hosts, *self.spares]:
            entry = listed.active(host.name)
            if entry is not None:
                quarantined[host.name] = entry
        away: dict[str, str] = {name: f"quarantined since {entry.since}" for name, entry in quarantined.items()}
        lock_failures: dict[str, str] = {}
        locked: set[str] = set()
        while True:
            placed = substitute(planned.hosts, self.spares, away)
            changed = False
            for host in placed.hosts:
                if host.name in away or host.name in locked:
                    continue
                refused = self._take(host, attempt)
                if refused is None:
                    locked.add(host.name)
                else:
                    away[host.name] = f"{refused[0]} (lock not taken: {refused[1]})"
                    lock_failures[host.name] = refused[1]
                    changed = True
            if not changed:
                break
        attempt.hosts = [host.name for host in placed.hosts]
        attempt.replaced = dict(placed.replaced)
        placement = Placement(planned=on_hosts(planned, placed.hosts))
        for gone, spare in placed.replaced.items():
            self.event(f"{gone} is {away[gone]}: spare {spare} takes its place (node {attempt.hosts.index(spare)})")
            placement.replacements.append(f"spare {spare} in place of {gone}: {gone} is {away[gone]}")
        no_spare = [name for name in placed.missing if name in quarantined]
        if no_spare:
            attempt.no_spare = no_spare
            described = "; ".join(quarantined[name].describe() for name in no_spare)
            placement.skipped = (f"skipped: no spare left for quarantined host(s) {', '.join(no_spare)} "
                                 f"({described})")
        else:
            placement.problems = [f"{name}: lock not taken: {lock_failures[name]}" for name in placed.missing]
        return placement

    def _take(self, host: Host, attempt: Attempt) -> tuple[str, str] | None:
        """None when the lock is taken; otherwise (what the host is, why the lock
        was not taken), its fault recorded when the host is to blame."""
        try:
            self.lock(host)
        except HostLocked as exc:
            return "held by another controller", first_line(str(exc))
        except HarnessError as exc:
            unreachable = isinstance(exc, HostUnreachable)
            why = first_line(str(exc))
            attempt.faults.append(Fault(host=host.name, code="BENCH-H01" if unreachable else "BENCH-H03",
                                        evidence=f"lock not taken: {why}", run_id=attempt.run_id))
            return "unreachable" if unreachable else "unusable (its work dir)", why
        return None

    # -- after an attempt -----------------------------------------------------------
    def record(self, attempt: Attempt, result: RunResult) -> list[QuarantineEntry]:
        """The attempt's faults (its own and the run's) counted; the entries newly made."""
        seen = {(f.host, f.code, f.evidence) for f in attempt.faults}
        attempt.faults += [f for f in result.faults if (f.host, f.code, f.evidence) not in seen]
        # One occurrence per host, code and run: three foreign processes seen by one
        # gate check are one fault, not three (each pairwise run is a run of its own).
        once = list({(f.host, f.code, f.run_id): f for f in attempt.faults}.values())
        created = self.store.record(once, self.policy)
        self.state.quarantined += created
        for entry in created:
            self.event(f"quarantined {entry.describe()}")
        return created

    # -- finding the bad node ---------------------------------------------------------
    def wants_bisect(self, planned: PlannedEntry, result: RunResult | None) -> bool:
        """A multi-node job whose hosts were not searched yet in this campaign, and
        (for a run) an infra failure that names no host."""
        names = sorted(host.name for host in planned.hosts)
        if len(names) < 2 or any(sorted(b.hosts) == names for b in self.state.bisections):
            return False
        if result is None:  # the bandwidth gate failed
            return True
        started = bool(result.nodes)  # a preflight refusal measured nothing about the fabric
        return started and result.failure_kind == "infra" and not result.faults and not result.lost_hosts

    def bisect(self, planned: PlannedEntry, attempt: Attempt, trigger: str, backend: ClusterBackend,
               console: Console) -> Bisection:
        hosts = planned.hosts
        needs_spare = len(hosts) == 2 or len(hosts) % 2 == 1
        spare = self._spare_for(hosts, attempt) if needs_spare else None
        self.event(f"finding the bad node of {', '.join(h.name for h in hosts)} with pairwise all-reduce runs"
                   + (f" (spare {spare.name})" if spare else ""))
        gates = self.suite.gates
        found = bisect(planned, hosts, spare, attempt.run_id, trigger, gates.min_busbw_gbps, gates.busbw_fix_hp,
                       backend, self.results, console)
        self.state.bisections.append(found)
        attempt.faults += faults(found)
        self.event(f"pairwise runs: {found.note}")
        return found

    def _spare_for(self, hosts: list[Host], attempt: Attempt) -> Host | None:
        """A usable spare with the hosts' device count, locked, for a pair."""
        listed = self._listed()
        names = {host.name for host in hosts}
        for spare in self.spares:
            if spare.name in names or listed.active(spare.name) is not None:
                continue
            if hosts and spare.devices != hosts[0].devices:
                continue
            if self._take(spare, attempt) is None:
                return spare
        return None
