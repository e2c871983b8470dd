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
from harness.backends.base import ClusterBackend
from harness.backends.registry import BACKENDS, backend_factory

# What `python -m harness --help` used to load first: none of it is needed to print the usage.
HEAVY = ("paramiko", "matplotlib", "jinja2", "pydantic", "rich", "yaml", "harness.backends.docker",
         "harness.backends.slurm", "harness.backends.base", "harness.core.runner", "harness.campaign.runner")

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
def test_every_registered_backend_is_a_cluster_backend(name: str) -> None:
    factory = backend_factory(name)
    assert isinstance(factory, type) and issubclass(factory, ClusterBackend)
