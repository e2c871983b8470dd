"""The command line starts quickly: `--help` (of the program and of every command)
imports no backend and no heavy library; a backend's module is imported when
an inventory names it (harness/backends/registry.py). What it costs in seconds
is printed by bench/cli_start.py, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import REPO_ROOT
from harness.backends.nodes import PAYLOADS, NodeBackend
from harness.backends.registry import BACKENDS, backend_factory
from harness.core.backend import ClusterBackend
from harness.core.inventory import Cluster, Host, Inventory, PayloadSpec

# What `python -m harness --help` used to load first: none of it is needed to print the usage.
HEAVY = ("paramiko", "matplotlib", "jinja2", "pydantic", "rich", "yaml", "harness.backends.docker",
         "harness.backends.slurm", "harness.core.backend", "harness.core.runner", "harness.campaign.runner")

# Runs the program as `python -m harness` does, then lists what was imported.
LIST_MODULES = """
import json, runpy, sys
sys.argv = ["harness", *json.loads(sys.argv[1])]
try:
    runpy.run_module("harness", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(*argv: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", LIST_MODULES, json.dumps(argv)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert "usage: python -m harness" in done.stdout, done.stdout + done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("argv", [
    ["--help"], ["bench", "--help"], ["history", "--help"], ["env", "diff", "--help"],
    ["campaign", "--help"], ["campaign", "run", "--help"],
])
def test_help_imports_no_backend_and_no_heavy_library(argv: list[str]) -> None:
    modules = imported_by(*argv)
    assert "harness.cli" in modules
    loaded = [name for name in HEAVY if name in modules]
    assert loaded == [], f"`python -m harness {' '.join(argv)}` imported {loaded}"


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_registered_backend_makes_a_cluster_backend(name: str) -> None:
    factory = backend_factory(name)
    hosts = [Host(name="here", address="127.0.0.1", transport="local")]
    settings = {"work_dir": "/tmp/bench-slurm-work"} if name == "slurm" else {}
    backend = factory(Inventory(cluster=Cluster(backend=name, backend_settings=settings), hosts=hosts))
    try:
        assert isinstance(backend, ClusterBackend)
    finally:
        backend.close()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_every_registered_payload_composes_with_local_access(payload: str) -> None:
    inventory = Inventory(cluster=Cluster(backend="local", payload=PayloadSpec(type=payload)))
    backend = backend_factory("local")(inventory)
    assert isinstance(backend, NodeBackend) and backend.payload.name == payload
