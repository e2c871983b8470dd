"""A Job: what to run (case × vendor × nnodes×nproc × overrides), validated."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cases.case import available_cases
from cases.protocol import GrammarError, hardware_config_name, join_fix_hp, parse_run_config, split_fix_hp
from harness.errors import UserError


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
) -> Job:
    cases = available_cases()
    if case not in cases:
        raise UserError(f"unknown case {case!r}; expected one of: {', '.join(cases)}", field="CASE")
    nnodes, nproc = parse_config_name(config)
    return Job(
        case=case,
        vendor=vendor,
        accelerator=accelerator,
        nnodes=nnodes,
        nproc_per_node=nproc,
        run_id=run_id or new_run_id(),
        fix_hp=validate_fix_hp(fix_hp),
        synthetic=synthetic,
        timeout_s=timeout_s,
        template_overrides=dict(template_overrides or {}),
    )
