"""Fixtures for the training-side tests (helpers live in casekit.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from casekit import REPO, env, make_jpeg_dataset, run_case_args  # noqa: E402


@pytest.fixture
def torchrun(tmp_path: Path, training_processes: None) -> Callable[..., subprocess.CompletedProcess]:
    """Run cases.run under torchrun with 2 processes on cpu (gloo)."""

    def run(case: str, fix_hp: str = "", data: Optional[Path] = None, nproc: int = 2,
            log_dir: Optional[Path] = None, timeout: float = 240) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(nproc)]
        argv += run_case_args(case, log_dir or tmp_path / "logs", fix_hp, data)
        return subprocess.run(argv, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def standalone(tmp_path: Path, training_processes: None) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m cases.run`` as one plain process."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cases.run", *args], cwd=REPO, env=env(),
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def jpeg_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_jpeg_dataset(tmp_path_factory.mktemp("imagenet_tiny"))
