"""The campaign loop.

    suite -> check every job (nothing touched) -> lock the hosts -> for each job and repeat:
        [resume: the attempt that was running when the controller died: its
         containers found by label, its logs collected, the containers removed]
        lock + health gates -> run_job (harness/core/runner.py) -> state saved
        infra (and stalled where configured): retried with backoff up to `retries`
    -> summary.md / summary.html -> notifications -> locks released

Exit status: 0 every job succeeded, 1 any failed, 2 bad suite (nothing
started), 130 interrupted (state saved; --resume continues). The whole campaign
uses one backend (backend.py): SSH connections kept from job to job, each
host's environment captured once, each image checked once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from cases.protocol import split_fix_hp
from harness.backends.node_checks import MasterPortBusy
from harness.backends.nodes import OrphansFound
from harness.campaign.backend import CachingBackend, campaign_backend
from harness.campaign.busbw_gate import busbw_problem
from harness.campaign.check import PlannedEntry, check_suite
from harness.campaign.gates import GateMemory, check_gates, first_line
from harness.campaign.heal import Healer
from harness.campaign.notify import Notifier
from harness.campaign.recover import record_unstarted, recover_attempt
from harness.campaign.spares import by_names, check_spares, on_hosts
from harness.campaign.state import Attempt, AttemptStatus, CampaignState, Controller, StateStore, Unit, folders, new_folder, now_iso
from harness.campaign.suite import LoadedSuite, SuiteError, load_suite
from harness.campaign.view import CampaignView
from harness.core.inventory import Host, Inventory, load_inventory
from harness.core.job import Job, ensure_new_run_id
from harness.core.results import RunResult
from harness.core.runner import RunInterrupted, run_job
from harness.core.vendor import load_vendor
from harness.core.watch import WatchLimits
from harness.errors import HarnessError, HostUnreachable, UserError
from harness.faults.attribute import faults_from_preflight
from harness.hostlock import HostLocked, HostLocks, this_controller

INTERRUPTED = 130


class Campaign:
    def __init__(self, loaded: LoadedSuite, planned: list[PlannedEntry], inventory: Inventory,
                 backend: CachingBackend, store: StateStore, state: CampaignState, results: Path,
                 console: Console, sleep: Callable[[float], None] = time.sleep, spares: list[Host] | None = None) -> None:
        self.loaded = loaded
        self.suite = loaded.suite
        self.planned = planned
        self.inventory = inventory
        self.backend = backend
        self.store = store
        self.state = state
        self.results = results
        self.console = console
        self.view = CampaignView(console)
        self.gate_memory = GateMemory(state.health, self.warn)  # each host's last reading, saved with the state
        self.notifier = Notifier(self.suite.notify, self.warn)
        self.sleep = sleep
        self.locks = HostLocks(backend.transport, this_controller(f"{state.name} {store.folder}"),
                               self.suite.lock_stale_after, self.warn)
        self.healer = Healer(state, self.suite, spares or [], results, self.locks.acquire, self.view.event,
                             inventory.cluster.quarantine.policy())

    def warn(self, message: str) -> None:
        self.view.event(f"warning: {message}", "yellow")

    def save(self) -> None:
        self.store.save(self.state)

    # -- locks ------------------------------------------------------------------------
    def lock_hosts(self) -> None:
        """Every host of the suite but the quarantined, before anything runs. A live holder stops the
        campaign (HostLocked, exit 2); a host that does not answer now is locked
        before its first job instead (its gate fails there while it is away)."""
        hosts: dict[str, Host] = {}
        quarantined = self.healer.quarantined_now()
        for planned in self.planned:
            for host in planned.hosts:
                if host.name not in quarantined:  # a spare takes its place: never locked
                    hosts.setdefault(host.name, host)
        for host in hosts.values():
            try:
                self.locks.acquire(host)
            except HostLocked:
                self.locks.release_all()
                raise
            except HarnessError as exc:
                self.warn(f"{host.name} cannot be locked now ({first_line(str(exc))}); it is locked before its first job")

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> int:
        self.view.transition(self.state, f"{len(self.state.units)} run(s) of {len(self.planned)} job(s), "
                                         f"state in {self.store.path}")
        try:
            for unit in self.state.units:
                if unit.status in ("success", "failed"):
                    continue
                self._run_unit(unit)
        except KeyboardInterrupt:  # RunInterrupted included: the run itself was recorded
            for unit in self.state.units:
                if unit.status == "running":
                    unit.status = "interrupted"
            self.state.status = "interrupted"
            self.state.exit_status = INTERRUPTED
            self.save()
            self._finish_reports(final=False)
            self.view.event(f"interrupted: state saved in {self.store.path}; "
                            f"`python -m harness campaign run {self.loaded.source} --resume` continues", "red")
            return INTERRUPTED
        failed = self.state.count("failed")
        self.state.status = "finished"
        self.state.finished_at = now_iso()
        self.state.exit_status = 0 if failed == 0 else 1
        self.save()
        self._finish_reports(final=True)
        return self.state.exit_status

    def _finish_reports(self, final: bool) -> None:
        from harness.campaign.summary import write_summary  # matplotlib: only when a summary is written

        summary_md = None
        try:
            summary_md = write_summary(self.state, self.store.folder, self.planned, self.results,
                                       self.suite.noise.rule())
            self.view.event(f"summary: {summary_md} and {summary_md.with_suffix('.html')}")
        except (OSError, HarnessError, ValueError) as exc:
            self.warn(f"the summary could not be written: {exc}")
        if final or self.notifier.enabled:
            self.notifier.send(self._payload("campaign_finished" if final else "campaign_interrupted", summary_md))

    def _payload(self, event: str, summary: Path | None = None, unit: Unit | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "event": event, "campaign": self.state.name, "stamp": self.state.stamp, "folder": str(self.store.folder),
            "status": self.state.status, "exit_status": self.state.exit_status,
            "counts": {s: self.state.count(s) for s in ("success", "failed", "running", "interrupted", "waiting")},
            "jobs": [{"job": u.job + 1, "repeat": u.repeat, "label": u.label, "status": u.status,
                      "attempts": len(u.attempts), "run_ids": [a.run_id for a in u.attempts],
                      "failure_kind": u.last.failure_kind if u.last else None,
                      "failure": first_line(u.last.failure) if u.last else None} for u in self.state.units],
        }
        # The hosts this campaign quarantined, newest last (since, until, codes, why).
        payload["quarantined"] = [entry.model_dump() for entry in self.state.quarantined]
        if summary is not None:
            payload["summary"] = str(summary)
        if unit is not None:
            payload["job"] = next(j for j in payload["jobs"] if (j["job"], j["repeat"]) == (unit.job + 1, unit.repeat))
        return payload

    def _run_unit(self, unit: Unit) -> None:
        planned = self.planned[unit.job]
        entry = planned.entry
        last = unit.last
        if last is not None and last.status == "running":
            self.view.event(f"{unit.label}: run {last.run_id} was running when the controller stopped; "
                            "collecting what it left")
            recover_attempt(last, on_hosts(planned, by_names(self.inventory, last.hosts)) if last.hosts else planned,
                            self.backend, self.results, self.warn)
            self.save()
        unit.status = "running"
        while True:
            attempt = Attempt(number=len(unit.attempts) + 1, run_id=self._run_id(unit))
            unit.attempts.append(attempt)
            self.save()
            self.view.transition(self.state, f"{unit.label}: attempt {attempt.number}, run {attempt.run_id}")
            try:
                result = self._attempt(planned, attempt, unit.seed)
            except RunInterrupted as exc:
                self._close(attempt, exc.result, "interrupted")
                raise
            except KeyboardInterrupt:
                attempt.status, attempt.failure_kind, attempt.finished_at = "interrupted", "interrupted", now_iso()
                attempt.failure = "interrupted before the run started"
                raise
            self._close(attempt, result, result.status)
            if result.status != "success":
                self.backend.forget()  # a failed host may have changed: capture and check it again
            if result.status == "success":
                unit.status = "success"
                self.save()
                self.view.transition(self.state, f"{unit.label}: success ({attempt.run_id})", "green")
                return
            retry = result.failure_kind == "infra" or (result.failure_kind == "stalled" and entry.retry_stalled)
            retry = retry and not attempt.no_spare  # a quarantine outlasts any backoff
            if not retry or unit.tries > entry.retries:
                unit.status = "failed"
                self.save()
                why = ("not retried" if not retry else f"{entry.retries} retr{'y' if entry.retries == 1 else 'ies'} "
                       "used")
                self.view.transition(self.state, f"{unit.label}: failed ({result.failure_kind}, {why}): "
                                                 f"{first_line(result.failure)}", "red")
                self.notifier.send(self._payload("job_failed", unit=unit))
                return
            delay = min(self.suite.backoff * 2 ** (unit.tries - 1), self.suite.backoff_max)
            self.save()
            self.view.transition(self.state, f"{unit.label}: {result.failure_kind} failure "
                                             f"({first_line(result.failure)}); retry {unit.tries} of "
                                             f"{entry.retries} in {delay:.0f} s", "yellow")
            self.sleep(delay)

    def _close(self, attempt: Attempt, result: RunResult, status: AttemptStatus) -> None:
        attempt.status = status
        attempt.failure_kind = result.failure_kind
        attempt.failure = result.failure
        attempt.finished_at = now_iso()
        folder = self.results / result.run_id / result.case / result.config_name / "results.json"
        attempt.results_json = str(folder) if folder.is_file() else None
        try:
            created = self.healer.record(attempt, result)
        except HarnessError as exc:  # the quarantine list cannot be read or written: the night goes on
            self.warn(f"the faults of {attempt.run_id} were not counted: {first_line(str(exc))}")
            created = []
        self.save()
        if created:
            self.notifier.send({**self._payload("hosts_quarantined"),
                                "newly_quarantined": [entry.model_dump() for entry in created]})

    def _run_id(self, unit: Unit) -> str:
        repeat = f"r{unit.repeat}" if unit.repeats > 1 else ""
        run_id = f"{self.state.name}-{self.state.stamp}-j{unit.job + 1}{repeat}-a{len(unit.attempts) + 1}"
        try:
            ensure_new_run_id(self.results, run_id)
        except UserError:
            run_id = f"{run_id}-{secrets.token_hex(2)}"
        return run_id

    def _attempt(self, checked: PlannedEntry, attempt: Attempt, seed: int | None) -> RunResult:
        """One attempt to its recorded result (RunInterrupted when stopped)."""
        job = checked.make_job(attempt.run_id, seed)
        placement = self.healer.place(checked, attempt)
        planned = placement.planned
        hosts = planned.hosts
        self.save()
        if placement.skipped:
            return record_unstarted(job, planned, self.backend, self.results, "infra", placement.skipped, self.warn)
        problems = list(placement.problems)
        if not problems and hosts:  # a scheduler's nodes are known only once allocated: no gates before
            smi = load_vendor(job.vendor).smi
            found = check_gates(self.backend, self.backend.transport, hosts, smi, self.suite.gates, self.gate_memory,
                                attempt.run_id)
            problems = [problem.text for problem in found]
            attempt.faults += [problem.fault for problem in found if problem.fault is not None]
        gates = self.suite.gates
        if not problems and gates.min_busbw_gbps is not None:
            problem = busbw_problem(planned, attempt.run_id, gates.min_busbw_gbps, gates.busbw_fix_hp, self.backend,
                                    self.results, self.console)
            problems = [problem] if problem else []
            if problem and self.healer.wants_bisect(planned, None):
                self.healer.bisect(planned, attempt, problem, self.backend, self.console)
        if problems:
            return record_unstarted(job, planned, self.backend, self.results, "infra",
                                    "health gate failed: " + "; ".join(problems), self.warn, list(attempt.faults))
        result = self._run(job, planned, attempt.run_id, placement.replacements)
        if result.status != "success" and self.healer.wants_bisect(planned, result):
            self.healer.bisect(planned, attempt, f"infra with no host named: {first_line(result.failure)}",
                               self.backend, self.console)
        return result

    def _run(self, job: Job, planned: PlannedEntry, run_id: str, replacements: list[str]) -> RunResult:
        entry = planned.entry
        limits = WatchLimits.for_cluster(self.inventory.cluster, entry.timeout_s, entry.stall_timeout_s)

        def say_replaced(result: RunResult, out_dir: Path) -> RunResult:  # the run's own record says it too
            return result.model_copy(update={"warnings": [*result.warnings, *replacements]})

        try:
            return run_job(job, planned.inventory, self.backend, self.results, self.console, limits=limits,
                           annotate=say_replaced if replacements else None, on_progress=self.view.progress)
        except RunInterrupted:
            raise
        except UserError as exc:  # the preflight refused: nothing was started
            retry = isinstance(exc, (HostUnreachable, OrphansFound, HostLocked, MasterPortBusy))
            return record_unstarted(job, planned, self.backend, self.results, "infra" if retry else "bad_input",
                                    f"preflight: {exc}", self.warn, faults_from_preflight(exc, run_id))
        except HarnessError as exc:  # the record could not be written (disk full), or the backend itself
            return record_unstarted(job, planned, self.backend, self.results, "infra", str(exc), self.warn)


def fresh_seed(fix_hp: str | None) -> int | None:
    """A new training seed, or None when fix_hp sets `seed` (the user pinned it)."""
    if any(key == "seed" for key, _ in split_fix_hp(fix_hp)):
        return None
    return secrets.randbelow(2**31 - 1) + 1


def _units(planned: list[PlannedEntry]) -> list[Unit]:
    """One unit per job and repeat, each with a fresh seed: repeats measure the
    run-to-run spread, which one seed for all of them would hide."""
    return [Unit(job=p.entry.index, repeat=repeat, repeats=p.entry.repeats, case=p.entry.case, vendor=p.entry.vendor,
                 accelerator=p.accelerator, config=p.entry.config, fix_hp=p.entry.fix_hp,
                 hosts=[h.name for h in p.hosts], seed=fresh_seed(p.entry.fix_hp))
            for p in planned for repeat in range(1, p.entry.repeats + 1)]


def _resume_state(loaded: LoadedSuite, units: list[Unit], results: Path) -> tuple[StateStore, CampaignState] | None:
    """The latest state of this campaign, checked against the suite; None when there is none."""
    found = folders(results, loaded.name)
    if not found:
        return None
    store = StateStore(found[-1])
    state = store.load()
    if state.status == "finished":
        return store, state
    if len(state.units) != len(units) or not all(a.same_job(b) for a, b in zip(state.units, units)):
        raise SuiteError(f"the suite's jobs changed since campaign {store.folder} started; resume needs the same "
                         "jobs in the same order (or start a new campaign without --resume)", file=str(loaded.source))
    return store, state


def run_campaign(suite_path: Path, results: Path, resume: bool, console: Console,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    loaded = load_suite(suite_path)
    inventory = load_inventory(loaded.inventory)
    backend = campaign_backend(inventory)
    try:
        planned = check_suite(loaded, inventory, backend)
        spares = check_spares(loaded, inventory, planned)
        units = _units(planned)
        resumed = _resume_state(loaded, units, results) if resume else None
        if resume and resumed is None:
            console.print(f"no earlier campaign {loaded.name} in {results}: starting a new one", highlight=False)
        if resumed is not None and resumed[1].status == "finished":
            store, state = resumed
            console.print(f"nothing to resume: campaign {store.folder} finished ({state.count('success')} ok, "
                          f"{state.count('failed')} failed); run without --resume for a new one", highlight=False)
            return state.exit_status or 0
        if resumed is not None:
            store, state = resumed
            state.status = "running"
            state.controller = Controller()
            state.resumed.append(now_iso())
        else:
            folder = new_folder(results, loaded.name)
            store = StateStore(folder)
            state = CampaignState(name=loaded.name, stamp=folder.name, suite=str(suite_path),
                                  inventory=str(loaded.inventory), units=units)
        campaign = Campaign(loaded, planned, inventory, backend, store, state, results, console, sleep, spares)
        try:
            try:
                campaign.lock_hosts()
            except HostLocked:
                if resumed is None:
                    store.folder.rmdir()  # nothing was written in it yet
                raise
            store.save(state)
            return campaign.run()
        finally:
            for problem in campaign.locks.release_all():
                campaign.warn(problem)
            campaign.view.close()
    finally:
        backend.close()
