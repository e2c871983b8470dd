"""The all-reduce sweep itself (torch is imported here only)."""

from __future__ import annotations

import time
from typing import Any, Dict

import torch
import torch.distributed as dist

from cases.allreduce import AllreduceConfig, bus_factor, message_sizes
from cases.case import WorkloadContext
from cases.errors import CaseError
from cases.protocol import BANDWIDTH_KEY

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _check(ctx: WorkloadContext, view: torch.Tensor) -> None:
    """Every rank contributes rank+1: the sum is n(n+1)/2 in every element."""
    n = ctx.world.world_size
    view.fill_(ctx.world.rank + 1)
    dist.all_reduce(view, op=dist.ReduceOp.SUM)
    ctx.spec.synchronize(ctx.device)
    expected = n * (n + 1) / 2
    worst = float((view.float() - expected).abs().max().item())
    if worst > 1e-3 * expected:
        raise CaseError(f"all-reduce of {view.numel()} elements returned a wrong sum: off by {worst:g} "
                        f"(expected {expected:g} everywhere)")


def _slowest(ctx: WorkloadContext, seconds: float) -> float:
    """The longest time any rank measured (every rank reports the same figure)."""
    value = torch.tensor([seconds], dtype=torch.float32, device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def run_sweep(ctx: WorkloadContext) -> Dict[str, Any]:
    cfg: AllreduceConfig = ctx.cfg
    dtype = ctx.plan.autocast_dtype or torch.float32
    elem = torch.tensor([], dtype=dtype).element_size()
    n = ctx.world.world_size
    sizes = message_sizes(cfg)
    buffer = torch.zeros(max(1, cfg.max_bytes // elem), dtype=dtype, device=ctx.device)
    fence = torch.zeros(1, dtype=torch.float32, device=ctx.device)
    ctx.events.emit("train_start", {})
    timed_s = 0.0
    busbw = []
    for size in sizes:
        count = max(1, size // elem)
        view = buffer[:count]
        if cfg.check:
            _check(ctx, view)
        view.zero_()  # zeros stay zeros: the timed sums never overflow
        for _ in range(cfg.warmup_iters):
            dist.all_reduce(view)
        dist.all_reduce(fence)  # every rank starts the clock together
        ctx.spec.synchronize(ctx.device)
        start = time.perf_counter()
        for _ in range(cfg.iters):
            dist.all_reduce(view)
        ctx.spec.synchronize(ctx.device)
        elapsed = _slowest(ctx, time.perf_counter() - start)
        timed_s += elapsed
        seconds = elapsed / cfg.iters
        nbytes = count * elem
        algbw = nbytes / seconds / 1e9
        busbw.append(algbw * bus_factor(n))
        ctx.events.emit(BANDWIDTH_KEY, {
            "op": "all_reduce", "size_bytes": nbytes, "count": count, "dtype": DTYPE_NAMES.get(dtype, str(dtype)),
            "world_size": n, "warmup_iters": cfg.warmup_iters, "iters": cfg.iters,
            "time_us": seconds * 1e6, "algbw_gbps": algbw, "busbw_gbps": busbw[-1],
            "check": "ok" if cfg.check else "skipped",
        })
    ctx.events.emit("train_stop", {"samples": 0, "steps": len(sizes) * cfg.iters, "stop_reason": "sweep_done"})
    memory = ctx.spec.memory(ctx.device)
    return {
        "core_s": timed_s, "sizes": len(sizes), "peak_busbw_gbps": max(busbw) if busbw else None,
        "peak_mem_gib": memory.peak_gib, "mem_total_gib": memory.total_gib, "mem_source": memory.source,
    }
