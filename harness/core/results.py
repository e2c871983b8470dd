"""What a finished run produced: the record written to results.json and read by
the report, the vendor-page renderer and the history."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Metrics(BaseModel):
    """The vendor README columns, computed as ../DESIGN.md defines them."""

    e2e_time: float | None = None  # s, process start -> run end
    p_whole: float | None = None  # global samples/s, train start -> train end
    p_train: float | None = None  # ... excluding end-of-epoch evaluations
    p_core: float | None = None  # ... over pure compute time (synced per step)
    acc: float | None = None  # final top-1, percent; None when the run does not evaluate
    mem_used_gib: float | None = None  # peak device memory used over the run
    mem_total_gib: float | None = None
    mem_source: str = "none"  # which tool the mem figure came from
    samples: int = 0  # global trained samples
    steps: int = 0
    world_size: int = 0
    step_s_p50: float | None = None
    step_s_p90: float | None = None
    step_s_max: float | None = None
    stop_reason: str | None = None


class NodeOutcome(BaseModel):
    host: str
    node_rank: int
    container: str
    exit_code: int | None  # None: never finished (stopped, lost)
    log_dir: str  # local directory the node's logs were collected into
    last_lines: list[str] = Field(default_factory=list)


class RunResult(BaseModel):
    run_id: str
    case: str
    vendor: str
    accelerator: str
    nnodes: int
    nproc_per_node: int
    precision: str
    fix_hp: str  # "bs=256,lr=0.72" or "/"
    status: str  # "success" | "failed"
    failure: str | None = None
    metrics: Metrics | None = None
    nodes: list[NodeOutcome] = Field(default_factory=list)
    image: str = ""
    effective_config: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)  # per host, see harness/hostinfo/environment.py
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    # `bench --repro PAGE`: the page, its pins, the environment drift and the
    # comparison with the page's row (harness/pages/repro.py); empty otherwise.
    reference: dict[str, Any] = Field(default_factory=dict)

    @property
    def config_name(self) -> str:
        return f"{self.nnodes}x{self.nproc_per_node}"
