"""Entry point of one training process.

    python -m cases.run --case resnet50 --vendor nvidia --config A100x1x8 \\
        [--log-dir DIR] [--fix-hp "bs=256,lr=0.8"] [--data /path/to/imagenet]

alone, or one per device under ``torchrun ... -m cases.run ...``. Without
``--data`` the run is synthetic (throughput only). Exit status: 0 on success, 2
on bad input (one line on stderr), 1 (with the traceback) on a crash.

SIGUSR1 (``python -m cases.stacks`` in the container) makes the process write
every thread's Python stack to ``<log-dir>/stacks_rank<rank>.log`` (stderr
without a log dir) and carry on: the controller asks for it before it stops a
stalled run.
"""

import time

PROCESS_START = time.time()  # first thing: e2e_time counts from here, before torch loads

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import faulthandler  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, Any, Callable, Dict, List, Optional  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cases import distributed  # noqa: E402
from cases.case import CaseSpec, WorkloadContext, load_case  # noqa: E402
from cases.config import CaseConfig, LoadedConfig, load_config  # noqa: E402
from cases.data import build_data, check_layout  # noqa: E402
from cases.devices import DeviceSpec, PrecisionPlan, apply_precision, get_device_spec  # noqa: E402
from cases.distributed import World, world_from_env  # noqa: E402
from cases.driver import Trainer, summarize, train  # noqa: E402
from cases.errors import CaseError, ConfigError, TrainingDiverged  # noqa: E402
from cases.flops import flops_event  # noqa: E402
from cases.protocol import STACKS_SIGNAL, stacks_file_name  # noqa: E402
from cases.recorder import Recorder  # noqa: E402
from cases.steptimes import ComputeClock, attach_to_ddp  # noqa: E402


class Terminated(Exception):
    """SIGTERM (docker stop, torchrun tearing down the job) as an exception, so the
    run records run_stop failed before it ends."""


def _torchvision_version() -> Optional[str]:
    """torchvision's own version string (with its build tag, e.g. "+cu130", which
    its package metadata may lack), read from the version.py it is built with
    rather than imported: the import costs a second of CPU, on every rank of a
    case that builds no model. Imported only where that file says nothing."""
    loaded = sys.modules.get("torchvision")
    if loaded is not None:
        return str(loaded.__version__)
    found = importlib.util.find_spec("torchvision")
    if found is None or found.origin is None:
        return None
    version_file = Path(found.origin).with_name("version.py")
    text = version_file.read_text(errors="replace") if version_file.is_file() else ""
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else str(__import__("torchvision").__version__)


def framework_versions() -> Dict[str, str]:
    """What this process trains with, as the environment record names it
    (harness/hostinfo/model.py FrameworkVersions): strings, "unknown" when absent."""
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": str(torch.version.cuda or "unknown")}
    probes: Dict[str, Callable[[], object]] = {
        "cudnn": lambda: torch.backends.cudnn.version(),
        "nccl": lambda: ".".join(str(part) for part in torch.cuda.nccl.version()),
        "torchvision": _torchvision_version,
    }
    for name, probe in probes.items():
        try:
            value = probe()
        except Exception:  # a missing library is a fact to record, not a failure
            value = None
        versions[name] = str(value) if value else "unknown"
    return versions

def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


def enable_stack_dumps(log_dir: Optional[Path], rank: int) -> Optional[IO[str]]:
    """On STACKS_SIGNAL, faulthandler writes every thread's stack (from C, so a
    rank blocked inside a collective answers too) to stacks_rank<rank>.log in
    log_dir, else to stderr. Returns the file, which must stay open while the
    handler is registered (disable_stack_dumps closes it)."""
    signum = getattr(signal, STACKS_SIGNAL, None)
    if signum is None or not hasattr(faulthandler, "register"):
        return None  # a platform without the signal
    stream: Optional[IO[str]] = None
    if log_dir is not None:
        path = log_dir / stacks_file_name(rank)
        try:
            stream = path.open("a", encoding="utf-8")
        except OSError as exc:
            print(f"stack dumps go to stderr, cannot open {path}: {exc}", file=sys.stderr)
    try:
        faulthandler.register(signum, file=stream if stream is not None else sys.stderr, all_threads=True)
    except (AttributeError, OSError, RuntimeError, ValueError):  # a stderr without a file descriptor
        if stream is not None:
            stream.close()
        return None
    return stream


def disable_stack_dumps(stream: Optional[IO[str]]) -> None:
    signum = getattr(signal, STACKS_SIGNAL, None)
    if signum is not None and hasattr(faulthandler, "unregister"):
        faulthandler.unregister(signum)
    if stream is not None:
        stream.close()


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cases.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", required=True, help="resnet50, mobilenetv2, vit, bigtransfer")
    parser.add_argument("--vendor", required=True, help="nvidia, iluvatar, kunlunxin, cpu")
    parser.add_argument("--config", required=True, help="<accelerator>x<nnodes>x<nproc>, e.g. A100x1x8")
    parser.add_argument("--log-dir", type=Path, default=None, help="writes events_rank<rank>.log here")
    parser.add_argument("--fix-hp", default="", help='overrides, e.g. "bs=256,lr=0.8"')
    parser.add_argument("--data", type=Path, default=None, help="ImageNet layout; absent: synthetic data")
    parser.add_argument("--seed", type=int, default=None,
                        help="the run's seed (a campaign's fresh one per repeat); wins over the config's, "
                             "and is not a fix_hp: runs with different seeds stay comparable")
    return parser.parse_args(argv)


def _config_event(loaded: LoadedConfig[CaseConfig], case: CaseSpec[Any, Any], args: argparse.Namespace, world: World,
                  weights: Optional[Path]) -> Dict[str, Any]:
    cfg = loaded.values
    return {
        **loaded.as_event(),
        "data": str(args.data) if args.data is not None else "synthetic",
        "synthetic": args.data is None,
        "global_batch_size": cfg.batch_size * world.world_size,
        "lr_effective": cfg.effective_lr(world.world_size),
        "pretrained": weights is not None,
        "seed_from": "--seed" if args.seed is not None else "config",
        "pretrained_file": str(weights) if weights is not None else None,
    }


def _world_event(world: World, spec: DeviceSpec, device: torch.device, plan: PrecisionPlan,
                 expected: Optional[int]) -> Dict[str, Any]:
    return {
        "world_size": world.world_size, "rank": world.rank, "local_rank": world.local_rank,
        "node_rank": world.node_rank, "backend": spec.backend if world.distributed else "none",
        "device": str(device), "device_name": spec.describe(device), "precision": plan.used,
        "precision_requested": plan.requested, "precision_note": plan.note, "tf32": plan.tf32,
        "distributed": world.distributed, "world_matches_config": expected in (None, world.world_size),
        "host": socket.gethostname(), "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "framework": framework_versions(),
    }


def _run_workload(case: CaseSpec[Any, Any], loaded: LoadedConfig[Any], spec: DeviceSpec, world: World,
                  events: Recorder) -> None:
    """A case that trains no model (CaseSpec.workload): config and world as for
    training, then the case's own loop, whose result is the summary event."""
    assert case.workload is not None
    events.emit("config", {**loaded.as_event(), "data": "none", "synthetic": True})
    if not world.distributed:
        raise ConfigError(f"--case {case.name} measures a collective: run it under torchrun")
    expected = loaded.name.nnodes * loaded.name.nproc if loaded.name.nnodes and loaded.name.nproc else None
    spec.prepare()
    device = spec.make_device(world.local_rank)
    plan = spec.precision(getattr(loaded.values, "precision", "fp32"), device)
    distributed.init(world, spec.backend)
    events.emit("world", _world_event(world, spec, device, plan, expected))
    events.emit("summary", case.workload(WorkloadContext(loaded.values, device, spec, plan, world, events)))


def _run(args: argparse.Namespace, world: World, events: Recorder) -> None:
    spec = get_device_spec(args.vendor)
    case = load_case(args.case)
    loaded = load_config(case.name, case.config, args.vendor, args.config, args.fix_hp)
    if case.workload is not None:
        _run_workload(case, loaded, spec, world, events)
        return
    if args.seed is not None:
        loaded = dataclasses.replace(loaded, values=loaded.values.model_copy(update={"seed": args.seed}))
    cfg: CaseConfig = loaded.values  # a training case's config (a workload case's need not be one)
    events.log_every = cfg.log_every
    weights = case.weights_file(cfg, args.data)
    events.emit("config", _config_event(loaded, case, args, world, weights))

    if weights is not None and not weights.is_file():
        raise ConfigError(f"{case.weights_key}: weights file {weights} does not exist "
                          f"(set {case.weights_key}: null to train from random init)")
    if args.data is not None:
        check_layout(args.data, cfg.num_classes, need_val=cfg.eval)
    expected = loaded.name.nnodes * loaded.name.nproc if loaded.name.nnodes and loaded.name.nproc else None
    if expected is not None and expected != world.world_size and world.is_main:
        print(f"warning: --config {loaded.name.name} means {expected} processes, "
              f"this job has {world.world_size}", file=sys.stderr)

    spec.prepare()
    device = spec.make_device(world.local_rank)
    plan = spec.precision(cfg.precision, device)
    distributed.init(world, spec.backend)
    events.emit("world", _world_event(world, spec, device, plan, expected))
    apply_precision(plan, cfg.cudnn_benchmark)
    torch.manual_seed(cfg.seed)

    data = build_data(cfg, args.data, world.rank, world.world_size,
                      pin_memory=cfg.pin_memory and spec.device_type != "cpu")
    model: nn.Module = case.build_model(cfg)
    if weights is not None and case.load_weights is not None:
        case.load_weights(model, weights, cfg)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    # Module.to accepts a device and a memory_format together; torch's overloads list them only apart.
    model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    # FLOPs per sample for MFU: the model's own forward + backward on meta stand-ins (no state touched).
    # Every rank holds the same model: one count per node is enough (the lowest rank's is used; a
    # second node's stands in when that node's logs are lost), and spares the CPU the other ranks share.
    if world.local_rank == 0:
        events.emit("flops", flops_event(model, (3, cfg.image_size, cfg.image_size)))
    clock = ComputeClock(spec.timing_event)
    compute_apart = True  # compute_s excludes the gradient all-reduce
    if world.distributed:
        device_ids = [device.index] if device.index is not None else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        compute_apart = spec.comm_hook and attach_to_ddp(model, clock)

    trainer = Trainer(cfg=cfg, model=model, data=data, device=device, spec=spec, plan=plan,
                      world=world, events=events, lr=cfg.effective_lr(world.world_size), clock=clock)
    result = train(trainer)
    events.emit("summary", {
        **summarize(trainer, result),
        "compute_timer": "device events" if spec.timing_event is not None else "wall clock",
        "compute_excludes_allreduce": compute_apart,
        "steps_per_epoch": data.steps_per_epoch,
        "train_samples_per_epoch": data.train_samples,
        "val_samples": data.val_samples,
    })


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    world = world_from_env()
    events = Recorder(args.log_dir, world.rank, echo=world.is_main)
    events.emit("process_start", {"pid": os.getpid(), "host": socket.gethostname()},
                time_ms=int(PROCESS_START * 1000))
    stacks = enable_stack_dumps(args.log_dir, world.rank)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        _run(args, world, events)
        distributed.shutdown()
        events.emit("run_stop", {"status": "success"})
        return 0
    except (CaseError, TrainingDiverged) as exc:
        events.emit("run_stop", {"status": "failed", "error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BaseException as exc:
        events.emit("run_stop", {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        distributed.shutdown()
        events.close()
        disable_stack_dumps(stacks)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is recorded and the process group is gone: skip the interpreter's
    # teardown of torch and torchvision (about a second per process), which
    # otherwise delays torchrun and the container by that much.
    os._exit(status)
