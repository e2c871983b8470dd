"""The layers stay apart: the core knows no payload, the backends know no campaign.
Read from the source (ast), so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import harness

HARNESS = Path(harness.__file__).parent
# What runs on a node (containers, images, a bare Python environment): the backends' business.
PAYLOAD_MODULES = {"harness.backends." + name for name in (
    "docker", "docker_request", "docker_image", "docker_collect", "image", "launch", "bare", "slurm_request")}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_core_imports_no_payload_module() -> None:
    offenders = {f"{path.relative_to(HARNESS)}: {name}" for path in (HARNESS / "core").glob("*.py")
                 for name in imports_of(path) if name in PAYLOAD_MODULES}
    assert offenders == set()


def test_no_backend_imports_the_campaign() -> None:
    offenders = {f"{path.relative_to(HARNESS)}: {name}" for path in (HARNESS / "backends").glob("*.py")
                 for name in imports_of(path) if name == "harness.campaign" or name.startswith("harness.campaign.")}
    assert offenders == set()


def test_the_checks_see_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from harness.backends.docker import DockerPayload\n    import harness.campaign.state\n")
    assert {"harness.backends.docker", "harness.campaign.state"} <= imports_of(module)


def test_no_backend_inherits_another() -> None:
    import importlib

    from harness.backends.registry import BACKENDS
    from harness.core.backend import ClusterBackend

    modules = {entry.partition(":")[0] for entry in BACKENDS.values()} | {"harness.campaign.backend"}
    classes = {cls for name in modules for cls in vars(importlib.import_module(name)).values()
               if isinstance(cls, type) and issubclass(cls, ClusterBackend) and cls is not ClusterBackend}
    assert classes, "no backend class found"
    assert {cls.__name__: cls.__bases__ for cls in classes if cls.__bases__ != (ClusterBackend,)} == {}
