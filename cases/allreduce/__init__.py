"""All-reduce bus bandwidth over a sweep of message sizes, in the spirit of
nccl-tests' all_reduce_perf: per size, warm-up iterations, then timed ones;
time per iteration (the slowest rank's), algbw = bytes / time and
busbw = algbw x 2(n-1)/n, the figure comparable with the link speed whatever
the rank count. One ``bandwidth`` event per size (cases/protocol.py).

No model is built: the case runs through CaseSpec.workload (cases/run.py).
torch is imported only by sweep.py, when the sweep runs: the controller
imports this module to validate the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cases.case import CaseSpec, WorkloadContext
from cases.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


class AllreduceConfig(BaseModel):
    """Every key is in defaults.yaml; hardware files and --fix-hp override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_bytes: int = Field(gt=0, description="smallest message, bytes (rounded down to whole elements, at least one)")
    max_bytes: int = Field(gt=0, description="largest message, bytes")
    step_factor: int = Field(ge=2, description="each size is the previous one times this")
    warmup_iters: int = Field(ge=0, description="untimed all-reduces per size")
    iters: int = Field(gt=0, description="timed all-reduces per size")
    precision: Literal["fp32", "amp", "bf16"] = Field(description="element type: fp32, or the vendor's 16-bit type")
    check: bool = Field(description="verify one all-reduce result per size before timing it")

    @model_validator(mode="after")
    def _range(self) -> "AllreduceConfig":
        if self.max_bytes < self.min_bytes:
            raise ValueError(f"max_bytes {self.max_bytes} is below min_bytes {self.min_bytes}")
        return self


def message_sizes(cfg: AllreduceConfig) -> List[int]:
    """min_bytes, min_bytes x step_factor, ... and always max_bytes last (as
    nccl-tests ends at -e): 8 B to 64 KiB by 4 is 8, 32, ..., 32768, 65536."""
    sizes: List[int] = []
    size = cfg.min_bytes
    while size < cfg.max_bytes:
        sizes.append(size)
        size *= cfg.step_factor
    sizes.append(cfg.max_bytes)
    return sizes


def bus_factor(world_size: int) -> float:
    """busbw / algbw of a ring all-reduce: each rank sends and receives 2(n-1)/n of the data."""
    return 2.0 * (world_size - 1) / world_size


def _no_model(cfg: Any) -> "nn.Module":
    raise ConfigError("the allreduce case builds no model")


def _run(ctx: WorkloadContext) -> Dict[str, Any]:
    from cases.allreduce.sweep import run_sweep

    return run_sweep(ctx)


SPEC = CaseSpec(name="allreduce", config=AllreduceConfig, build_model=_no_model,
                workload=_run)
