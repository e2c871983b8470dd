"""A Job: what to run (case × vendor × nnodes×nproc × overrides), validated.

Everything is checked before anything happens (bad input, exit 2): the case,
the config name, fix_hp, the run id (it names containers, labels and folders on
every host: ``RUN_ID_RE``, no ``..``) and the --param template overrides
against the vendor spec's defaults (harness/core/vendor.py). Whether the run id
is still free needs the results folder: ``ensure_new_run_id``.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cases.case import available_cases
from cases.protocol import GrammarError, hardware_config_name, join_fix_hp, parse_run_config, split_fix_hp
from harness.core.vendor import load_vendor, template_value_problem
from harness.errors import UserError

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Job:
    case: str
    vendor: str
    accelerator: str
    nnodes: int
    nproc_per_node: int
    run_id: str
    fix_hp: str | None = None  # "bs=256,lr=0.72"; None: none
    synthetic: bool = True
    timeout_s: float = 24 * 3600.0
    template_overrides: dict[str, Any] = field(default_factory=dict)
    # The training seed (cases.run --seed), apart from fix_hp so that runs with other
    # seeds stay the same job in the history; None: the case config's.
    seed: int | None = None

    @property
    def config_name(self) -> str:
        return f"{self.nnodes}x{self.nproc_per_node}"

    @property
    def hardware_config(self) -> str:
        """The case's per-hardware config name, e.g. A100x1x8."""
        return hardware_config_name(self.accelerator, self.nnodes, self.nproc_per_node)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def parse_config_name(value: str) -> tuple[int, int]:
    try:
        return parse_run_config(value)
    except GrammarError as exc:
        raise UserError(str(exc), field="CONFIG") from exc


def validate_fix_hp(value: str | None) -> str | None:
    try:
        return join_fix_hp(split_fix_hp(value)) or None
    except GrammarError as exc:
        raise UserError(str(exc).removeprefix("fix_hp: "), field="FIX_HP") from exc


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def validate_run_id(run_id: str) -> str:
    """A run id safe in a container name, a label, a path on every host and in the
    results: a letter or digit, then up to 99 of letters, digits, . _ -; no ``..``."""
    if not RUN_ID_RE.match(run_id) or ".." in run_id:
        raise UserError(
            f"{run_id!r} is not a usable run id: expected a letter or digit, then up to 99 letters, "
            "digits, '.', '_' or '-' (no '..', no '/', no spaces), e.g. 20261125-000000-abcdef",
            field="RUN_ID",
        )
    return run_id


def ensure_new_run_id(results_root: Path, run_id: str) -> None:
    """UserError when results_root/run_id exists already (a finished, failed or
    half-written run): a run never writes into another's folder."""
    folder = Path(results_root) / validate_run_id(run_id)
    if os.path.lexists(folder):
        raise UserError(
            f"run id {run_id} is taken: {folder} exists; give another --run-id, or none for a new one",
            field="RUN_ID",
        )


def validate_template_overrides(vendor: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """--param values checked against the vendor spec's defaults (the same kind;
    no control character). The spec's own values and its framework pins are
    checked when it is loaded."""
    if not overrides:
        return {}
    spec = load_vendor(vendor)
    defaults = {"python": spec.python, **spec.template_params}
    for key, value in overrides.items():
        problem = (template_value_problem(key, value, defaults[key]) if key in defaults
                   else template_value_problem(key, value))
        if problem:
            raise UserError(problem, field=f"--param {key}")
    return dict(overrides)


def make_job(
    case: str,
    vendor: str,
    accelerator: str,
    config: str,
    *,
    fix_hp: str | None = None,
    synthetic: bool = True,
    timeout_s: float = 24 * 3600.0,
    template_overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
    seed: int | None = None,
) -> Job:
    cases = available_cases()
    if case not in cases:
        raise UserError(f"unknown case {case!r}; expected one of: {', '.join(cases)}", field="CASE")
    nnodes, nproc = parse_config_name(config)
    run_id = validate_run_id(run_id) if run_id is not None else new_run_id()
    return Job(
        case=case,
        vendor=vendor,
        accelerator=accelerator,
        nnodes=nnodes,
        nproc_per_node=nproc,
        run_id=run_id,
        fix_hp=validate_fix_hp(fix_hp),
        synthetic=synthetic,
        timeout_s=timeout_s,
        template_overrides=validate_template_overrides(vendor, template_overrides or {}),
        seed=seed,
    )
