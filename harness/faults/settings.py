"""`cluster.quarantine` in the inventory: how long the window of the "twice"
rule is and how long an automatic quarantine lasts.

    cluster:
      quarantine: {window: 12h, expiry: 24h}   # expiry: never keeps a host out until released
      quarantine: {stragglers: true}           # a straggler (BENCH-S01) counts toward "twice" too

A straggler is recorded but does not count by default: its threshold is a
site's judgement (ranks sharing a busy cpu machine score 0.88-0.96), and a
host slow twice is a reason to look, not to drain it, until a site says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from harness.durations import parse_duration

DEFAULT_WINDOW_S = 12 * 3600.0
DEFAULT_EXPIRY_S = 24 * 3600.0
STRAGGLER = "BENCH-S01"

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


@dataclass(frozen=True)
class QuarantinePolicy:
    window_s: float = DEFAULT_WINDOW_S  # two occurrences of any code within this quarantine
    expiry_s: float | None = DEFAULT_EXPIRY_S  # how long an automatic entry lasts; None: until released
    uncounted: frozenset[str] = frozenset({STRAGGLER})  # codes recorded in runs, never counted toward quarantine


class QuarantineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Seconds = DEFAULT_WINDOW_S
    expiry: Seconds | Literal["never"] = DEFAULT_EXPIRY_S
    stragglers: bool = False  # a straggler counts toward the twice rule

    def policy(self) -> QuarantinePolicy:
        return QuarantinePolicy(self.window, None if self.expiry == "never" else self.expiry,
                                frozenset() if self.stragglers else frozenset({STRAGGLER}))
