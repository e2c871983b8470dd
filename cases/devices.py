"""Per-vendor device table: everything the training loop needs to know about a
device, as data and small functions. The loop never branches on a vendor name.

| vendor    | torch device | backend | notes                                                  |
|-----------|--------------|---------|--------------------------------------------------------|
| nvidia    | cuda         | nccl    |                                                        |
| iluvatar  | cuda         | nccl    | CoreX builds of torch are CUDA-compatible (torch.cuda) |
| kunlunxin | cuda         | xccl    | via torch_xmlir, see _KUNLUNXIN_NOTE                   |
| cpu       | cpu          | gloo    | tests and the cpu vendor; memory is the process's RSS  |
"""

from __future__ import annotations

import importlib
import os
import resource
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from cases.errors import DeviceError

GIB = float(1 << 30)


@dataclass(frozen=True)
class Memory:
    peak_gib: Optional[float]
    total_gib: Optional[float]
    source: str


@dataclass(frozen=True)
class PrecisionPlan:
    requested: str
    used: str  # the label the results carry: what actually ran
    autocast_dtype: Optional[torch.dtype]
    grad_scaler: bool
    tf32: Optional[bool]  # None where TF32 does not exist (no flag is touched)
    note: str = ""


@dataclass(frozen=True)
class DeviceSpec:
    vendor: str
    device_type: str  # torch device type, also the autocast device type
    backend: str  # torch.distributed backend
    plugin: Optional[str]  # module to import first (the vendor's torch extension)
    is_available: Callable[[], bool]
    make_device: Callable[[int], torch.device]  # local rank -> device (and select it)
    synchronize: Callable[[torch.device], None]
    memory: Callable[[torch.device], Memory]
    precision: Callable[[str, torch.device], PrecisionPlan]
    describe: Callable[[torch.device], str]  # model name of the device, for the record
    note: str = ""
    # A device timer (torch.cuda.Event-like: record(), elapsed_time(other) in ms);
    # None: wall time, right where every op is synchronous (cpu).
    timing_event: Optional[Callable[[], Any]] = None
    # Whether DDP's communication hook (futures from the process group) may time
    # compute apart from the gradient all-reduce (cases/steptimes.py).
    comm_hook: bool = True

    def prepare(self) -> None:
        """Import the vendor plugin and check the device is there."""
        if self.plugin is not None:
            try:
                importlib.import_module(self.plugin)
            except ImportError as exc:
                raise DeviceError(
                    f"vendor {self.vendor}: cannot import {self.plugin} ({exc}); "
                    "run inside the vendor's image"
                ) from exc
        if not self.is_available():
            raise DeviceError(
                f"vendor {self.vendor}: no {self.device_type} device visible to this process "
                f"(torch {torch.__version__})"
            )


# --- cuda and cuda-compatible stacks -------------------------------------------------


def _cuda_device(local_rank: int) -> torch.device:
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceError(f"local rank {local_rank} has no device: only {count} visible")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _cuda_sync(device: torch.device) -> None:
    torch.cuda.synchronize(device)


def _cuda_memory(device: torch.device) -> Memory:
    return Memory(
        peak_gib=torch.cuda.max_memory_reserved(device) / GIB,
        total_gib=torch.cuda.get_device_properties(device).total_memory / GIB,
        source="torch.cuda.max_memory_reserved / device total_memory",
    )


def _cuda_event() -> Any:
    return torch.cuda.Event(enable_timing=True)


def _cuda_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


def _cuda_precision(requested: str, device: torch.device) -> PrecisionPlan:
    if requested == "fp32":
        return PrecisionPlan(requested, "fp32", None, False, tf32=False)
    if requested == "tf32":
        if torch.cuda.get_device_capability(device) < (8, 0):
            return PrecisionPlan(requested, "fp32", None, False, tf32=True,
                                 note="TF32 needs compute capability 8.0+: the math ran in fp32")
        return PrecisionPlan(requested, "tf32", None, False, tf32=True)
    if requested == "amp":
        return PrecisionPlan(requested, "amp", torch.float16, True, tf32=False)
    if requested == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise DeviceError(f"precision bf16: not supported by {_cuda_name(device)}")
        return PrecisionPlan(requested, "bf16", torch.bfloat16, False, tf32=False)
    raise DeviceError(f"unknown precision {requested!r}")


# Kunlunxin R300 (the reference page's stack: torch 1.12.1 + xmlir). torch_xmlir,
# once imported with XMLIR_F_XPU_ENABLED_BOOL=true, serves the "cuda" device API
# and registers the "xccl" process-group backend over BKCL (what FlagPerf's R300
# configs use). Only fp32 is wired: it is what the reference runs used, and
# autocast through xmlir is unverified here. Futures from xccl (what a DDP
# communication hook needs) are unverified too: compute_s there includes the
# gradient all-reduce.
_KUNLUNXIN_NOTE = "torch_xmlir serves the cuda device API; xccl runs over BKCL"


def _fp32_only(vendor: str) -> Callable[[str, torch.device], PrecisionPlan]:
    def plan(requested: str, device: torch.device) -> PrecisionPlan:
        if requested != "fp32":
            raise DeviceError(f"precision {requested}: only fp32 is supported for vendor {vendor}")
        return PrecisionPlan(requested, "fp32", None, False, tf32=None)

    return plan


# --- cpu -------------------------------------------------------------------------------


def _cpu_device(local_rank: int) -> torch.device:
    return torch.device("cpu")


def _no_sync(device: torch.device) -> None:
    return None


def _host_memory(device: torch.device) -> Memory:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Memory(peak_kib * 1024 / GIB, total / GIB,
                  source="getrusage(RUSAGE_SELF).ru_maxrss / host physical memory")


def _cpu_precision(requested: str, device: torch.device) -> PrecisionPlan:
    if requested == "fp32":
        return PrecisionPlan(requested, "fp32", None, False, tf32=None)
    if requested == "tf32":
        return PrecisionPlan(requested, "fp32", None, False, tf32=None, note="no TF32 on cpu: ran fp32")
    if requested == "amp":
        # fp16 autocast on cpu is partial and slow; bf16 autocast is the cpu's mixed precision.
        return PrecisionPlan(requested, "bf16", torch.bfloat16, False, tf32=None,
                             note="fp16 autocast is not a cpu path: ran bf16 autocast")
    if requested == "bf16":
        return PrecisionPlan(requested, "bf16", torch.bfloat16, False, tf32=None)
    raise DeviceError(f"unknown precision {requested!r}")


def _cpu_name(device: torch.device) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def _cuda_like(vendor: str, backend: str, plugin: Optional[str] = None,
               precision: Optional[Callable[[str, torch.device], PrecisionPlan]] = None,
               note: str = "", comm_hook: bool = True) -> DeviceSpec:
    return DeviceSpec(
        vendor=vendor, device_type="cuda", backend=backend, plugin=plugin,
        is_available=torch.cuda.is_available, make_device=_cuda_device, synchronize=_cuda_sync,
        memory=_cuda_memory, precision=precision or _cuda_precision, describe=_cuda_name, note=note,
        timing_event=_cuda_event, comm_hook=comm_hook,
    )


DEVICES: Dict[str, DeviceSpec] = {
    "nvidia": _cuda_like("nvidia", "nccl"),
    "iluvatar": _cuda_like("iluvatar", "nccl", note="CoreX torch is CUDA-compatible"),
    "kunlunxin": _cuda_like("kunlunxin", "xccl", plugin="torch_xmlir",
                            precision=_fp32_only("kunlunxin"), note=_KUNLUNXIN_NOTE,
                            comm_hook=False),
    "cpu": DeviceSpec(
        vendor="cpu", device_type="cpu", backend="gloo", plugin=None,
        is_available=lambda: True, make_device=_cpu_device, synchronize=_no_sync,
        memory=_host_memory, precision=_cpu_precision, describe=_cpu_name,
    ),
}


def get_device_spec(vendor: str) -> DeviceSpec:
    spec = DEVICES.get(vendor)
    if spec is None:
        raise DeviceError(f"--vendor: unknown vendor {vendor!r}; known: {', '.join(sorted(DEVICES))}")
    return spec


def apply_precision(plan: PrecisionPlan, cudnn_benchmark: bool) -> None:
    """Set the process-wide math flags the plan asks for."""
    if plan.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = plan.tf32
        torch.backends.cudnn.allow_tf32 = plan.tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark
