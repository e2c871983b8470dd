"""What a case package provides, and finding one by name.

A case is a folder ``cases/<name>/`` with ``defaults.yaml``, ``configs/`` and an
``__init__.py`` that defines ``SPEC = CaseSpec(...)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Type

from cases.config import CASES_DIR, CaseConfig
from cases.errors import CaseError

if TYPE_CHECKING:
    from torch import nn


def _no_weights(cfg: CaseConfig, data_dir: Optional[Path]) -> Optional[Path]:
    return None


@dataclass(frozen=True)
class CaseSpec:
    name: str
    config: Type[CaseConfig]
    # builds the model with random weights (torchvision: weights=None)
    build_model: Callable[[CaseConfig], nn.Module]
    # the file to initialise from, or None for random init
    weights_file: Callable[[CaseConfig, Optional[Path]], Optional[Path]] = _no_weights
    # loads weights_file into the built model; raises CaseError on a bad file
    load_weights: Optional[Callable[[nn.Module, Path, CaseConfig], None]] = None
    # the config key that names the weights file, for messages
    weights_key: str = "weights"


def available_cases() -> List[str]:
    return sorted(p.parent.name for p in CASES_DIR.glob("*/defaults.yaml"))


def load_case(name: str) -> CaseSpec:
    known = available_cases()
    if name not in known:
        raise CaseError(f"--case: unknown case {name!r}; available: {', '.join(known)}")
    module = importlib.import_module(f"cases.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, CaseSpec):
        raise CaseError(f"cases/{name}/__init__.py does not define SPEC = CaseSpec(...)")
    return spec
