"""Every job of a suite checked before the first one starts, touching no host:
the case, the vendor, the config, the hardware config file for the accelerator
and the fix_hp keys (harness/core/validate.py, the check `bench` makes), enough
hosts and devices, the template rendering and the launch plan (the backend's
own plan(), as the dry run makes it) and the reference page. Every bad job is
named (file, job index, field); one is enough to start nothing (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.campaign.busbw_gate import check_busbw_job
from harness.campaign.suite import LoadedSuite, SuiteEntry, SuiteError
from harness.core.backend import ClusterBackend
from harness.core.inventory import Host, Inventory
from harness.core.job import Job, make_job, parse_config_name
from harness.core.runner import build_plan
from harness.core.validate import check_case_config
from harness.core.vendor import load_vendor
from harness.errors import UserError
from harness.pages.model import VendorPage
from harness.pages.parse import read_page
from harness.pages.repro import framework_pins

# bench's variable names -> the suite's field names
_FIELDS = {"CASE": "case", "CONFIG": "config", "FIX_HP": "fix_hp", "ACCEL": "accelerator", "VENDOR": "vendor",
           "reference": "reference", "hosts": "hosts"}
VALIDATION_RUN_ID = "campaign-check"


@dataclass(frozen=True)
class PlannedEntry:
    """A checked job: what each of its attempts is made from."""

    entry: SuiteEntry
    accelerator: str
    inventory: Inventory  # the hosts it may use, node 0 first
    page: VendorPage | None
    # The reference page's framework, as template parameters (framework_pins in vendor.yaml).
    pins: dict[str, Any] = field(default_factory=dict)

    def make_job(self, run_id: str, seed: int | None = None) -> Job:
        entry = self.entry
        return make_job(entry.case, entry.vendor, self.accelerator, entry.config, fix_hp=entry.fix_hp,
                        synthetic=not entry.real_data, timeout_s=entry.timeout_s, template_overrides=self.pins,
                        run_id=run_id, seed=seed)

    @property
    def hosts(self) -> list[Host]:
        """The hosts its runs take (the first nnodes of its inventory)."""
        return self.inventory.hosts[:parse_config_name(self.entry.config)[0]]


def inventory_for(entry: SuiteEntry, inventory: Inventory) -> Inventory:
    """The inventory, or the job's own `hosts` from it, in the job's order."""
    if entry.hosts is None:
        return inventory
    by_name = {host.name: host for host in inventory.hosts}
    unknown = [name for name in entry.hosts if name not in by_name]
    if unknown:
        raise UserError(f"unknown host {unknown[0]!r}; {inventory.source} lists {', '.join(by_name)}", field="hosts")
    return inventory.model_copy(update={"hosts": [by_name[name] for name in entry.hosts]})


def _problem(entry: SuiteEntry, exc: UserError, source: str) -> str:
    """One line: the suite file, the job, the field, what is wrong."""
    text = str(exc)
    where = ": ".join(part for part in (exc.file, exc.field) if part)
    body = text[len(where) + 2:] if where and text.startswith(where + ": ") else text
    field = None if exc.file else _FIELDS.get(exc.field or "")
    context = "" if field or not where else f"{where}: "
    return f"{source}: {entry.field} {entry.describe()}{'.' + field if field else ''}: {context}{body}"


def check_entry(entry: SuiteEntry, inventory: Inventory, backend: ClusterBackend) -> PlannedEntry:
    vendor = load_vendor(entry.vendor)
    accelerator = entry.accelerator or vendor.accelerator
    page, pins = None, {}
    if entry.reference is not None:
        if not entry.reference.is_file():
            raise UserError(f"reference page not found: {entry.reference}", field="reference")
        page = read_page(entry.reference)
        pins = framework_pins(page, vendor, str(entry.reference))
    planned = PlannedEntry(entry=entry, accelerator=accelerator, inventory=inventory_for(entry, inventory),
                           page=page, pins=pins)
    job = planned.make_job(VALIDATION_RUN_ID)
    check_case_config(job)
    if backend.uses_host_list:
        planned.inventory.select(job.nnodes)
    build_plan(job, planned.inventory, backend)
    return planned


def check_suite(loaded: LoadedSuite, inventory: Inventory, backend: ClusterBackend) -> list[PlannedEntry]:
    """Every job checked; SuiteError naming each bad one when any is."""
    planned: list[PlannedEntry] = []
    problems: list[str] = []
    for entry in loaded.entries:
        try:
            checked = check_entry(entry, inventory, backend)
            if loaded.suite.gates.min_busbw_gbps is not None:
                check_busbw_job(checked, loaded.suite.gates.busbw_fix_hp)
            planned.append(checked)
        except UserError as exc:
            problems.append(_problem(entry, exc, str(loaded.source)))
    if problems:
        count = f"{len(problems)} of {len(loaded.entries)} job(s) cannot run; nothing was started:\n"
        raise SuiteError(count + "\n".join(problems))
    return planned
