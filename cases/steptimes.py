"""Where one rank's step time went: waiting for data, its own compute, the rest.

A slow device slows every rank through the collectives, so a rank's step time
cannot name the slow one; its *compute* can, if it excludes the waits on the
others. Per step::

    data_s     previous step's end -> this batch fetched and on the device
    compute_s  forward + backward on this rank alone: from the start fence to the
               moment its last gradient bucket is ready (DDP's communication hook
               fires then, before the all-reduce is awaited), or to the end of
               backward without DDP
    comm_s     the rest of step_s: the fences' waits on the other ranks, the
               gradient all-reduce not hidden behind backward, the optimizer

On a device with timing events (DeviceSpec.timing_event) compute_s is measured
on the device: an event recorded at the start and at each bucket (the last
recording is the one read), read after the stop fence's synchronize, so nothing
here adds a host sync. Without events (cpu, where every op is synchronous) it is
wall time.
"""

import time
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist

# No `from __future__ import annotations` here: DDP checks the hook's annotations
# at registration, as objects (bucket: dist.GradBucket).


class ComputeClock:
    def __init__(self, make_event: "Optional[Callable[[], Any]]" = None) -> None:
        self._start_event = make_event() if make_event is not None else None
        self._end_event = make_event() if make_event is not None else None
        self._start_s = 0.0
        self._end_s: Optional[float] = None
        self._ended = False

    def begin(self) -> None:
        self._ended = False
        self._end_s = None
        if self._start_event is not None:
            self._start_event.record()
        else:
            self._start_s = time.perf_counter()

    def mark(self) -> None:
        """Local compute has reached this point (a gradient bucket is ready)."""
        self._ended = True
        if self._end_event is not None:
            self._end_event.record()
        else:
            self._end_s = time.perf_counter()

    def backward_done(self) -> None:
        """End of backward: the end, unless a bucket already marked it."""
        if not self._ended:
            self.mark()

    def seconds(self) -> Optional[float]:
        """This step's compute; call after the device was synchronized. None when
        nothing marked an end (a step that never ran backward)."""
        if not self._ended:
            return None
        if self._start_event is not None and self._end_event is not None:
            return float(self._start_event.elapsed_time(self._end_event)) / 1000.0
        assert self._end_s is not None
        return self._end_s - self._start_s


def attach_to_ddp(model: torch.nn.Module, clock: ComputeClock) -> bool:
    """Have DDP mark the clock as each gradient bucket becomes ready, then
    all-reduce it exactly as DDP does by default. False when this torch or its
    process group cannot take a communication hook (compute_s then includes the
    gradient all-reduce, and the summary says so)."""
    register = getattr(model, "register_comm_hook", None)
    if register is None:
        return False
    try:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    except ImportError:
        return False

    # torch's stubs lack GradBucket; DDP compares this annotation with the real class.
    def timed_allreduce(state: ComputeClock,
                        bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:  # type: ignore[name-defined]
        state.mark()
        return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]  # None: the default group

    try:
        register(clock, timed_allreduce)
    except (RuntimeError, TypeError, AttributeError):
        return False
    return True


def split_step(step_s: float, data_s: float, compute_s: Optional[float]) -> Dict[str, float]:
    """The step event's timing fields; comm_s is what data and compute leave."""
    parts = {"data_s": data_s}
    if compute_s is not None:
        parts["compute_s"] = compute_s
        parts["comm_s"] = max(0.0, step_s - data_s - compute_s)
    return parts
