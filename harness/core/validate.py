"""The checks a job needs from the training side's own definitions, made on the
controller before any host is touched (bad input, exit 2): the case's hardware
config file for the accelerator, and the fix_hp keys and values read with the
case's own config model (cases/config.py), layered exactly as the training
processes will layer them. `bench` (and its dry run) and every job of a
campaign go through ``check_case_config``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from cases.case import load_case
from cases.config import CASES_DIR, FIX_HP_SOURCE, LoadedConfig, hardware_file, load_config
from cases.errors import CaseError
from cases.protocol import GrammarError, parse_hardware_config
from harness import REPO_ROOT
from harness.core.job import Job
from harness.errors import UserError


def hardware_files(case: str, vendor: str, cases_dir: Path = CASES_DIR) -> list[str]:
    """The hardware config files a case has for a vendor, by file name."""
    folder = cases_dir / case / "configs" / vendor
    return sorted(path.name for path in folder.glob("*.yaml")) if folder.is_dir() else []


def _missing_hardware_file(job: Job, cases_dir: Path) -> UserError:
    folder = cases_dir / job.case / "configs" / job.vendor
    shown = folder.relative_to(REPO_ROOT) if folder.is_relative_to(REPO_ROOT) else folder
    wanted = f"{job.hardware_config}.yaml or {job.accelerator}.yaml"
    existing = hardware_files(job.case, job.vendor, cases_dir)
    have = (f"it has {', '.join(existing)}" if existing else "it has none")
    return UserError(
        f"no hardware config for accelerator {job.accelerator} at {job.config_name}: {shown}/ holds no "
        f"{wanted} ({have}); without one the case's full default recipe would run. Pick an accelerator "
        "that has a file (--accelerator / ACCEL), or add one", field="ACCEL")


def check_case_config(job: Job, cases_dir: Path = CASES_DIR) -> LoadedConfig[BaseModel]:
    """The job's effective case config, or a UserError naming what is wrong: no
    hardware file for the accelerator (naming the files that exist), an unknown
    fix_hp key (naming the known keys) or a value the case's model refuses."""
    try:
        spec = load_case(job.case)
        name = parse_hardware_config(job.hardware_config)
    except (CaseError, GrammarError) as exc:
        raise UserError(str(exc).removeprefix("--case: "), field="CASE") from exc
    if hardware_file(cases_dir / job.case, job.vendor, name) is None:
        raise _missing_hardware_file(job, cases_dir)
    try:
        return load_config(job.case, spec.config, job.vendor, job.hardware_config, job.fix_hp,
                           case_dir=cases_dir / job.case)
    except CaseError as exc:
        message = str(exc)
        if message.startswith(f"{FIX_HP_SOURCE}: "):
            raise UserError(message.removeprefix(f"{FIX_HP_SOURCE}: "), field="FIX_HP") from exc
        raise UserError(message, field="CASE") from exc
