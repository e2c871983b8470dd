"""What a finished run produced: the record written to results.json and read by
the report, the vendor-page renderer and the history."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from harness.core.kinds import FailureKind as FailureKind
from harness.core.kinds import RunStatus as RunStatus
from harness.faults.codes import Fault


class Metrics(BaseModel):
    """The vendor README columns (e2e_time, p_whole, p_train, p_core, acc, mem), as
    harness/core/metrics.py computes them from the event logs."""

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


class NodeTransport(BaseModel):
    """What the node's collective library chose, from its ranks' debug output
    (harness/fabric/record.py); recorded on runs with a fabric."""

    library: str
    transport: str | None = None  # ib | roce | socket | ...; None: the log does not say
    networks: list[str] = Field(default_factory=list)  # as the library printed them
    devices: list[str] = Field(default_factory=list)  # the devices its channels used (or listed)
    gdr: bool | None = None  # GPU Direct RDMA on the channels; None: not seen
    version: str | None = None
    notes: list[str] = Field(default_factory=list)  # log lines that explain a fallback
    summary: str = ""  # one line: "ib (mlx5_0:1), GPU Direct RDMA on, NCCL 2.19.3"


class BandwidthRow(BaseModel):
    size_bytes: int
    count: int
    dtype: str
    time_us: float
    algbw_gbps: float
    busbw_gbps: float  # algbw x 2(n-1)/n
    iters: int = 0
    check: str = ""  # ok | skipped


class Bandwidth(BaseModel):
    """A bandwidth case's table (cases/allreduce, harness/fabric/busbw.py)."""

    op: str
    world_size: int
    rows: list[BandwidthRow] = Field(default_factory=list)
    avg_busbw_gbps: float | None = None
    peak_busbw_gbps: float | None = None


class NodeOutcome(BaseModel):
    host: str
    node_rank: int
    container: str
    exit_code: int | None  # None: never finished (stopped, lost)
    log_dir: str  # local directory the node's logs were collected into
    last_lines: list[str] = Field(default_factory=list)
    # False when the node's logs could not all be brought back (lost host, full
    # disk); its remote run folder is then kept, and `remote_run_dir` says where.
    collected: bool = True
    remote_run_dir: str = ""
    notes: list[str] = Field(default_factory=list)  # partial docker logs, skipped files, ...
    transport: NodeTransport | None = None  # runs with a fabric: what the collective library chose


class RankTiming(BaseModel):
    """One rank's step times by part (cases/steptimes.py), from its event log."""

    rank: int
    node_rank: int | None = None
    host: str = ""  # the inventory's name of the rank's node
    local_rank: int | None = None
    device: str = ""  # "cuda:3 (NVIDIA H100 80GB HBM3)", "cpu"
    steps: int = 0
    samples_per_s: float | None = None  # this rank's own samples over its summed step time
    step_s_p50: float | None = None
    step_s_p90: float | None = None
    compute_s_p50: float | None = None  # forward + backward on this rank alone
    compute_s_p90: float | None = None
    data_s_p50: float | None = None  # waiting for the next batch
    data_s_p90: float | None = None
    comm_s_p50: float | None = None  # the rest: waits on other ranks, all-reduce, optimizer
    comm_s_p90: float | None = None
    collected: bool = True  # False: no event log of this rank came back
    note: str = ""


class Straggler(BaseModel):
    rank: int
    node_rank: int | None = None
    host: str
    device: str
    score: float  # fastest rank's compute p50 / this rank's (1.0 = fastest)
    compute_s_p50: float
    fastest_compute_s_p50: float
    why: str  # the node's monitor samples for this device over the training window


class InputBound(BaseModel):
    rank: int
    node_rank: int | None = None
    host: str
    data_share: float  # data_s p50 / step_s p50
    data_s_p50: float
    step_s_p50: float
    num_workers: int | None = None
    batch_size: int | None = None


class NodeVerdict(BaseModel):
    """One line per node for the morning reader: ok, slow, input-bound, hung, lost, failed."""

    node_rank: int
    host: str
    devices: list[str] = Field(default_factory=list)
    verdict: str  # ok | slow | input-bound | hung | lost | failed | unknown
    detail: str = ""

    def line(self) -> str:
        devices = f", {', '.join(self.devices)}" if self.devices else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"node {self.node_rank} ({self.host}{devices}): {self.verdict}{detail}"


class StackGroup(BaseModel):
    """Ranks whose main threads stood in the same innermost frames when their stacks were dumped."""

    ranks: list[int]
    frames: list[str] = Field(default_factory=list)  # innermost first, "file:line in func"
    training_frame: str = ""  # the innermost frame of the training code (cases/), "" when none


class HangOutlier(BaseModel):
    """A rank that hung somewhere else than most ranks: the likely cause of a stall."""

    rank: int
    host: str
    node_rank: int
    training_frame: str  # the innermost frame of the training code, else the innermost frame


class HangTriage(BaseModel):
    """Where each rank of a stalled run stood, from the stacks dumped before the stop
    (harness/core/hang.py): groups biggest first, the ranks outside the biggest group."""

    groups: list[StackGroup] = Field(default_factory=list)
    outliers: list[HangOutlier] = Field(default_factory=list)
    missing_ranks: list[int] = Field(default_factory=list)  # no stacks file, or an empty one
    frozen_nodes: list[str] = Field(default_factory=list)  # "node 1 (host)": stood paused or stopped
    summary: str = ""  # the lines that lead the failure report


class Efficiency(BaseModel):
    """Is the figure right for the hardware: MFU against a dense peak and the
    measured figure against a published one, each with its source; a figure
    that cannot be judged is None with the reason (never a default peak)."""

    precision: str
    flops_per_sample: float | None = None  # forward + backward of one sample, counted on the rank's model
    peak_key: str = ""  # the peak `precision` is judged against: fp32 | tf32 | fp16 (amp) | bf16
    peak_tflops: float | None = None  # dense, per device, at `precision`
    peak_source: str = ""
    devices: int | None = None  # what mfu divided by: every device of the run
    mfu: float | None = None  # flops_per_sample x p_core / (peak x devices)
    mfu_missing: str = ""  # why mfu is None
    expected_metric: str = "p_core"  # p_core, or peak_busbw_gbps for bandwidth cases
    expected: float | None = None
    expected_source: str = ""
    of_expected: float | None = None  # measured / expected
    expected_missing: str = ""  # why of_expected is None


class DevicePower(BaseModel):
    host: str
    device: str  # the monitor's device index or name; "host" for a whole-host reading (ipmitool)
    samples: int  # power samples stamped inside the training window
    avg_w: float  # energy_j / covered_s
    max_w: float
    energy_j: float  # power integrated over the training window (trapezoid, clipped to the window)
    covered_s: float = 0.0  # the part of the window its samples span; gaps and uncovered edges are not counted


class Energy(BaseModel):
    """Power samples of the monitors integrated over the training window (harness/core/energy.py)."""

    source: str = ""  # the tool(s) the power came from, and whether whole-host power is in the total
    window_s: float | None = None
    energy_j: float | None = None  # every device of the run (the hosts' only where no device tool reports power)
    j_per_1k_samples: float | None = None
    devices: list[DevicePower] = Field(default_factory=list)
    missing: str = ""  # why energy_j is None
    notes: list[str] = Field(default_factory=list)  # parts of the window without samples, nodes without a monitor


class RunResult(BaseModel):
    run_id: str
    case: str
    vendor: str
    accelerator: str
    nnodes: int
    nproc_per_node: int
    precision: str
    fix_hp: str  # "bs=256,lr=0.72" or "/"
    status: RunStatus
    failure: str | None = None
    failure_kind: FailureKind | None = None
    lost_hosts: list[str] = Field(default_factory=list)
    # Problems attributed to one host, each with its fault code (harness/faults/codes.py).
    faults: list[Fault] = Field(default_factory=list)
    # What is still on the hosts after the run (a lost host's containers and run
    # folder): finish with `python -m harness collect` / `clean --run-id`.
    left_on_hosts: list[str] = Field(default_factory=list)
    # A scheduler's allocation (Slurm: "Slurm job 123 on n1, n2"); None on a host list.
    allocation: str | None = None
    metrics: Metrics | None = None
    bandwidth: Bandwidth | None = None  # bandwidth cases: busbw per message size
    hang: HangTriage | None = None  # stalled runs: where each rank stood when its stacks were dumped
    # What did not fail the run but must be seen (a fabric fallback under allow_fallback, ...).
    warnings: list[str] = Field(default_factory=list)
    # Where the time went, per rank, and who was slow (harness/core/attribution.py).
    ranks: list[RankTiming] = Field(default_factory=list)
    straggler_threshold: float | None = None  # what `stragglers` was judged against
    stragglers: list[Straggler] = Field(default_factory=list)
    input_bound: list[InputBound] = Field(default_factory=list)
    node_verdicts: list[NodeVerdict] = Field(default_factory=list)
    # Is the figure right: MFU and % of expected (harness/expect/), and what it cost in energy.
    efficiency: Efficiency | None = None
    energy: Energy | None = None
    nodes: list[NodeOutcome] = Field(default_factory=list)
    image: str = ""
    effective_config: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)  # per host, see harness/hostinfo/model.py
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    # `bench --repro PAGE`: the page, its pins, the environment drift and the
    # comparison with the page's row (harness/pages/compare.py); empty otherwise.
    reference: dict[str, Any] = Field(default_factory=dict)

    @property
    def config_name(self) -> str:
        return f"{self.nnodes}x{self.nproc_per_node}"
