"""Backends by name: the inventory's `cluster.backend` picks one. A new backend
is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable

from harness.backends.base import ClusterBackend
from harness.backends.docker import DockerSshBackend
from harness.backends.slurm import SlurmBackend
from harness.core.inventory import Inventory
from harness.errors import UserError

BACKENDS: dict[str, Callable[[Inventory], ClusterBackend]] = {
    "ssh-docker": DockerSshBackend,
    "slurm": SlurmBackend,
}


def make_backend(inventory: Inventory) -> ClusterBackend:
    name = inventory.cluster.backend
    factory = BACKENDS.get(name)
    if factory is None:
        raise UserError(f"unknown backend {name!r}; expected one of {', '.join(sorted(BACKENDS))}",
                        file=inventory.source, field="cluster.backend")
    backend = factory(inventory)
    if backend.uses_host_list and not inventory.hosts:
        raise UserError(f"the {name} backend runs on the hosts listed here: expected at least one host",
                        file=inventory.source, field="hosts")
    return backend
