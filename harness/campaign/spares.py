"""Spares: suite hosts kept aside that take the place of a job's host that is
quarantined or unreachable. Pure over the inventory's Host models: which spare
goes where (same device count, node order kept, the spare in the missing
host's place, no spare used twice by one job), the suite's `spares` checked,
and a checked job moved onto other hosts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.campaign.check import PlannedEntry
from harness.campaign.suite import LoadedSuite, SuiteError
from harness.core.inventory import Host, Inventory


@dataclass(frozen=True)
class Substitution:
    hosts: list[Host]  # node 0 first; a missing host no spare could replace stays in its place
    replaced: dict[str, str] = field(default_factory=dict)  # host -> the spare in its place
    missing: list[str] = field(default_factory=list)  # unusable hosts no spare was left for


def substitute(hosts: list[Host], spares: list[Host], unusable: Iterable[str]) -> Substitution:
    """Each unusable host of the job replaced by the first spare with its device
    count that is usable and not already one of the job's hosts."""
    away = set(unusable)
    in_use = {host.name for host in hosts}
    placed: list[Host] = []
    replaced: dict[str, str] = {}
    missing: list[str] = []
    for host in hosts:
        if host.name not in away:
            placed.append(host)
            continue
        spare = next((s for s in spares if s.devices == host.devices and s.name not in in_use
                      and s.name not in away), None)
        if spare is None:
            missing.append(host.name)
            placed.append(host)
            continue
        in_use.add(spare.name)
        replaced[host.name] = spare.name
        placed.append(spare)
    return Substitution(hosts=placed, replaced=replaced, missing=missing)


def on_hosts(planned: PlannedEntry, hosts: list[Host]) -> PlannedEntry:
    """The same checked job on these hosts (node 0 first); the rest of its
    inventory follows them, as the runner takes the first nnodes."""
    chosen = {host.name for host in hosts}
    rest = [host for host in planned.inventory.hosts if host.name not in chosen]
    inventory = planned.inventory.model_copy(update={"hosts": [*hosts, *rest]})
    return dataclasses.replace(planned, inventory=inventory)


def by_names(inventory: Inventory, names: list[str]) -> list[Host]:
    known = {host.name: host for host in inventory.hosts}
    return [known[name] for name in names if name in known]


def check_spares(loaded: LoadedSuite, inventory: Inventory, planned: list[PlannedEntry]) -> list[Host]:
    """The suite's spares as inventory hosts; SuiteError (exit 2, field `spares`)
    for a name the inventory does not list or a spare a job already runs on."""
    names = loaded.suite.spares
    known = {host.name for host in inventory.hosts}
    for name in names:
        if name not in known:
            raise SuiteError(f"unknown host {name!r}; {inventory.source or 'the inventory'} lists "
                             f"{', '.join(sorted(known))}", file=str(loaded.source), field="spares")
    for entry in planned:
        used = [host.name for host in entry.hosts if host.name in names]
        if used:
            raise SuiteError(f"{used[0]!r} is a spare but {entry.entry.describe()} already runs on it; a spare "
                             "must be a host no job uses", file=str(loaded.source), field="spares")
    return by_names(inventory, names)
