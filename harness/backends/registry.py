"""Backends by name: the inventory's `cluster.backend` picks one. A new backend
is one module and one line here.

Each entry names the backend's class as "module:Class"; its module (and what it
imports: paramiko, the docker and slurm code) is imported when a backend of that
name is made, so `python -m harness --help` and the commands that run nothing
never import any backend."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.errors import UserError

if TYPE_CHECKING:
    from harness.core.backend import ClusterBackend
    from harness.core.inventory import Inventory

BACKENDS: dict[str, str] = {
    "ssh": "harness.backends.nodes:ssh_backend",
    "ssh-docker": "harness.backends.nodes:ssh_backend",  # its first name
    "local": "harness.backends.nodes:local_backend",
    "slurm": "harness.backends.slurm:SlurmBackend",
}


def backend_factory(name: str) -> Callable[[Inventory], ClusterBackend]:
    """The class registered as `name`, its module imported now (KeyError when none is)."""
    module, _, attr = BACKENDS[name].partition(":")
    factory: Callable[[Inventory], ClusterBackend] = getattr(importlib.import_module(module), attr)
    return factory


def make_backend(inventory: Inventory) -> ClusterBackend:
    name = inventory.cluster.backend
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; expected one of {', '.join(sorted(BACKENDS))}",
                        file=inventory.source, field="cluster.backend")
    return backend_factory(name)(inventory)
