"""What a case package provides, and finding one by name.

A case is a folder ``cases/<name>/`` with ``defaults.yaml``, ``configs/`` and an
``__init__.py`` that defines ``SPEC = CaseSpec(...)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Generic, List, Optional, Type, TypeVar

from pydantic import BaseModel

from cases.config import CASES_DIR
from cases.errors import CaseError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cases.devices import DeviceSpec, PrecisionPlan
    from cases.distributed import World
    from cases.recorder import Recorder


# The case's config model: a CaseConfig subclass, or for a workload case any model.
ConfigT = TypeVar("ConfigT", bound=BaseModel)
# What build_model returns, and load_weights takes.
ModelT = TypeVar("ModelT", bound="nn.Module")


def _no_weights(cfg: object, data_dir: Optional[Path]) -> Optional[Path]:
    return None


@dataclass(frozen=True)
class CaseSpec(Generic[ConfigT, ModelT]):
    name: str
    config: Type[ConfigT]
    # builds the model with random weights (torchvision: weights=None)
    build_model: Callable[[ConfigT], ModelT]
    # the file to initialise from, or None for random init
    weights_file: Callable[[ConfigT, Optional[Path]], Optional[Path]] = _no_weights
    # loads weights_file into the built model; raises CaseError on a bad file
    load_weights: Optional[Callable[[ModelT, Path, ConfigT], None]] = None
    # the config key that names the weights file, for messages
    weights_key: str = "weights"
    # A case that trains no model (cases/allreduce): run.py writes config and world
    # as for training, then calls this instead of build_model and the training loop;
    # it writes its own events and returns the summary event's value. Its config
    # model need not be a CaseConfig (only `precision` is read, default fp32).
    workload: Optional[Callable[["WorkloadContext"], Dict[str, Any]]] = None


@dataclass(frozen=True)
class WorkloadContext:
    """What run.py hands a workload case once the process group is up."""

    cfg: Any  # the case's config model
    device: "torch.device"
    spec: "DeviceSpec"
    plan: "PrecisionPlan"
    world: "World"
    events: "Recorder"


def available_cases() -> List[str]:
    return sorted(p.parent.name for p in CASES_DIR.glob("*/defaults.yaml"))


def load_case(name: str) -> CaseSpec[Any, Any]:
    known = available_cases()
    if name not in known:
        raise CaseError(f"--case: unknown case {name!r}; available: {', '.join(known)}")
    module = importlib.import_module(f"cases.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, CaseSpec):
        raise CaseError(f"cases/{name}/__init__.py does not define SPEC = CaseSpec(...)")
    return spec
