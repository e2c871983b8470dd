"""A Job: what to run (case × vendor × nnodes×nproc × overrides), validated."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from harness import REPO_ROOT
from harness.errors import UserError

CASES_DIR = REPO_ROOT / "cases"
_CONFIG_RE = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
_FIX_HP_ITEM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=[^,=\s]+$")


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
        return f"{self.accelerator}x{self.nnodes}x{self.nproc_per_node}"

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def available_cases() -> list[str]:
    return sorted(p.parent.name for p in CASES_DIR.glob("*/defaults.yaml"))


def parse_config_name(value: str) -> tuple[int, int]:
    match = _CONFIG_RE.match(value.strip())
    if not match:
        raise UserError(
            f"expected <nnodes>x<nproc_per_node> such as 1x1, 1x8 or 2x8, got {value!r}", field="CONFIG"
        )
    return int(match.group(1)), int(match.group(2))


def validate_fix_hp(value: str | None) -> str | None:
    if value is None or value.strip() in ("", "/"):
        return None
    items = [item.strip() for item in value.split(",")]
    for item in items:
        if not _FIX_HP_ITEM_RE.match(item):
            raise UserError(f"expected comma-separated key=value pairs, got {item!r}", field="FIX_HP")
    return ",".join(items)


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
