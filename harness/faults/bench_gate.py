"""What `bench` does with the quarantine list (results/quarantine.json): before
anything touches a host, refuse a quarantined one (exit 2, naming it, its codes
and since when) unless --ignore-quarantine; a dry run only warns. After the run
(and after a preflight that a host did not pass) the faults it attributes to
hosts are printed and counted, and each host they quarantine is one line.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from harness.errors import UserError
from harness.faults.attribute import faults_from_preflight
from harness.faults.codes import CODES, Fault
from harness.faults.quarantine import QuarantinePolicy, QuarantineStore, refuse_quarantined


def _warn(console: Console, message: str) -> None:
    console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


class BenchQuarantine:
    def __init__(self, results: Path, hosts: list[str], policy: QuarantinePolicy, console: Console,
                 ignore: bool = False) -> None:
        self.results = results
        self.hosts = hosts  # the job's hosts (none for a scheduler's backend: its nodes come later)
        self.policy = policy
        self.console = console
        self.ignore = ignore

    def check(self, dry_run: bool = False) -> None:
        """HostQuarantined (exit 2) for the first quarantined host of the job; a dry
        run, or --ignore-quarantine, warns instead. Expired entries are ignored."""
        listed = QuarantineStore(self.results).load()
        held = [entry for host in self.hosts if (entry := listed.active(host)) is not None]
        if not held:
            return
        if not dry_run and not self.ignore:
            refuse_quarantined(self.results, self.hosts, listed=listed)
        why = "bench refuses it (--ignore-quarantine runs anyway)" if dry_run else "running anyway (--ignore-quarantine)"
        for entry in held:
            _warn(self.console, f"quarantined: {entry.describe()}; {why}")

    def record(self, faults: list[Fault]) -> None:
        """Print the faults and count them; one line per host they quarantine. A
        quarantine list that cannot be written is a warning: the run is recorded."""
        for fault in faults:
            text = CODES[fault.code].text if fault.code in CODES else ""
            self.console.print(Text.assemble(("fault: ", "yellow"), f"{fault.host}: {fault.code} {text}: "
                                             f"{fault.evidence}"), soft_wrap=True)
        try:
            created = QuarantineStore(self.results).record(faults, self.policy)
        except (OSError, UserError) as exc:
            _warn(self.console, f"cannot update the quarantine list in {self.results}: {exc}")
            return
        for entry in created:
            self.console.print(Text.assemble(("quarantined: ", "red"), entry.describe()), soft_wrap=True)

    def preflight_failed(self, exc: BaseException, run_id: str) -> None:
        """A host that did not pass the preflight (or the lock check) is a fault too,
        though the run never started and is not recorded (exit 2)."""
        self.record(faults_from_preflight(exc, run_id))
