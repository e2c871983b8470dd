"""The framework versions a rank records in its `world` event (cases/run.py),
read by real interpreters: torchvision's comes from its version.py, without
importing it, since a case that builds no model (allreduce) never needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from casekit import REPO, env

RECORDED = ("import json, sys; from cases.run import framework_versions; "
            "print(json.dumps([framework_versions()['torchvision'], 'torchvision' in sys.modules]))")


def _recorded(extra_path: Optional[Path] = None) -> Any:
    variables: Dict[str, str] = env()
    if extra_path is not None:
        variables["PYTHONPATH"] = os.pathsep.join([str(extra_path), variables.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", RECORDED], cwd=REPO, env=variables, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fake_torchvision(root: Path, init: str, version_py: Optional[str]) -> Path:
    package = root / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    if version_py is not None:
        (package / "version.py").write_text(version_py)
    return root


def test_the_installed_torchvisions_version_is_the_one_its_import_gives_and_it_is_not_imported() -> None:
    imported = subprocess.run([sys.executable, "-c", "import torchvision; print(torchvision.__version__)"],
                              cwd=REPO, env=env(), capture_output=True, text=True, timeout=120, check=True)
    assert _recorded() == [imported.stdout.strip(), False]


def test_a_torchvision_that_cannot_import_is_still_recorded_from_its_version_file(tmp_path: Path) -> None:
    root = _fake_torchvision(tmp_path, "raise ImportError('libc10.so: cannot open shared object file')\n",
                             "__version__ = '1.2.3+cpu'\ngit_version = 'abc'\n")
    assert _recorded(root) == ["1.2.3+cpu", False]


def test_a_version_file_without_a_version_falls_back_to_the_import(tmp_path: Path) -> None:
    root = _fake_torchvision(tmp_path, "__version__ = '4.5.6'\n", "git_version = 'abc'\n")
    assert _recorded(root) == ["4.5.6", True]
