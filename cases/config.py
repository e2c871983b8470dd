"""The typed, layered config of a case.

Layers, later wins:

1. ``cases/<case>/defaults.yaml``: every key of the case, nothing else.
2. the hardware file ``cases/<case>/configs/<vendor>/<config>.yaml``, or, when
   there is none, ``configs/<vendor>/<accelerator>.yaml`` (the accelerator is
   the part of the config name before the first ``x``); neither is fine and is
   recorded.
3. ``--fix-hp "bs=256,lr=0.72"``: comma-separated ``key=value``, values read
   by YAML rules; ``bs``, ``lr`` and ``max_epochs`` are aliases.

Every layer is validated on its own, so an error names the layer it came from.
Python 3.8 syntax on purpose (``Optional``/``List`` in pydantic fields): some
vendor images ship an old interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Generic, List, Literal, Optional, Tuple, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cases import closest
from cases.errors import ConfigError
from cases.protocol import GrammarError, HardwareConfig, parse_hardware_config, split_fix_hp

CASES_DIR = Path(__file__).resolve().parent
FIX_HP_SOURCE = "--fix-hp"
# fix_hp alias -> config key
ALIASES: Dict[str, str] = {"bs": "batch_size", "lr": "lr", "max_epochs": "epochs"}
# config key -> short name used when the effective fix_hp is written out
SHORT_NAMES: Dict[str, str] = {"batch_size": "bs"}
# keys a hardware file sets that count as fix_hp in the results (the vendor pages'
# "hyper-parameters overridden to saturate the device")
HARDWARE_HP_KEYS = ("batch_size", "lr")


class CaseConfig(BaseModel):
    """Keys shared by every case. A case subclasses it to add its model keys.

    No field has a default: ``defaults.yaml`` must list every key, so that one
    file shows the whole recipe.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # optimisation (SGD)
    batch_size: int = Field(gt=0, description="per device")
    lr: Optional[float] = Field(gt=0, description="absolute learning rate; null: base_lr scaled")
    base_lr: float = Field(gt=0)
    lr_ref_batch: Optional[int] = Field(gt=0, description="lr = base_lr * global batch / this; null: no scaling")
    momentum: float = Field(ge=0)
    weight_decay: float = Field(ge=0)
    lr_schedule: Literal["constant", "step", "multistep", "cosine"]
    lr_step_epochs: float = Field(gt=0, description="step: decay every this many epochs")
    lr_gamma: float = Field(gt=0)
    lr_milestones: List[float] = Field(description="multistep: epochs (fractions allowed) where lr *= lr_gamma")
    warmup_epochs: float = Field(ge=0, description="linear warm-up, fractions allowed")
    label_smoothing: float = Field(ge=0, lt=1)
    # when to stop
    epochs: int = Field(gt=0, description="max epochs")
    max_steps: Optional[int] = Field(gt=0)
    max_samples: Optional[int] = Field(gt=0, description="global trained samples")
    target_acc: Optional[float] = Field(gt=0, le=100, description="top-1 percent; stop when reached")
    eval: bool = Field(description="evaluate at the end of every epoch")
    # data
    image_size: int = Field(gt=0)
    train_resize: Optional[int] = Field(gt=0, description="null: RandomResizedCrop; else square resize + random crop")
    val_resize: Optional[int] = Field(gt=0, description="resize before the centre crop; null: image_size*256/224")
    norm_mean: Tuple[float, float, float]
    norm_std: Tuple[float, float, float]
    num_classes: int = Field(gt=0)
    synthetic_samples: int = Field(gt=0, description="synthetic data: global samples per epoch")
    synthetic_val_samples: int = Field(ge=0, description="synthetic data: eval samples; 0: no eval")
    num_workers: int = Field(ge=0)
    pin_memory: bool
    # runtime
    precision: Literal["fp32", "tf32", "amp", "bf16"]
    channels_last: bool
    cudnn_benchmark: bool
    seed: int
    log_every: int = Field(gt=0, description="echo every Nth step event to stdout (the log file gets all)")
    fail_rank: int = Field(description="fault injection: this global rank raises at fail_step; -1: off")
    fail_step: int

    def effective_lr(self, world_size: int) -> float:
        if self.lr is not None:
            return self.lr
        if self.lr_ref_batch is None:
            return self.base_lr
        return self.base_lr * self.batch_size * world_size / self.lr_ref_batch


# The case's config model: a CaseConfig subclass, or for a workload case
# (cases/allreduce) any model.
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class LoadedConfig(Generic[ModelT]):
    case: str
    vendor: str
    name: HardwareConfig
    values: ModelT
    files: List[str]
    hardware_file: Optional[str]
    hardware_keys: List[str]
    fix_hp: Dict[str, Any]

    def fix_hp_effective(self) -> str:
        """The run's fix_hp as the vendor pages write it (``bs=256,lr=0.8``), or
        ``""``: batch_size/lr set by the hardware file, then every --fix-hp key."""
        keys = [k for k in HARDWARE_HP_KEYS if k in self.hardware_keys and k not in self.fix_hp]
        keys += list(self.fix_hp)
        values = self.values.model_dump()
        return ",".join(f"{SHORT_NAMES.get(k, k)}={_render(values[k])}" for k in keys)

    def as_event(self) -> Dict[str, Any]:
        return {
            **self.values.model_dump(),
            "case": self.case,
            "vendor": self.vendor,
            "config_name": self.name.name,
            "accelerator": self.name.accelerator,
            "config_nnodes": self.name.nnodes,
            "config_nproc": self.name.nproc,
            "config_files": self.files,
            "hardware_file": self.hardware_file,
            "hardware_file_found": self.hardware_file is not None,
            "fix_hp_cli": self.fix_hp,
            "fix_hp": self.fix_hp_effective(),
        }


def _render(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_config_name(name: str) -> HardwareConfig:
    try:
        return parse_hardware_config(name)
    except GrammarError as exc:
        raise ConfigError(f"--config: {exc}") from exc


def parse_fix_hp(text: Optional[str]) -> Dict[str, Any]:
    """``"bs=256,lr=0.72"`` -> ``{"batch_size": 256, "lr": 0.72}`` (aliases resolved,
    values read by YAML rules)."""
    try:
        pairs = split_fix_hp(text)
    except GrammarError as exc:
        raise ConfigError(f"{FIX_HP_SOURCE}: {str(exc).split(': ', 1)[1]}") from exc
    result: Dict[str, Any] = {}
    for key, raw in pairs:
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{FIX_HP_SOURCE}: {key}: cannot read value {raw!r}: {exc}") from exc
        canonical = ALIASES.get(key, key)
        if canonical in result:
            raise ConfigError(f"{FIX_HP_SOURCE}: {key}: given twice")
        result[canonical] = value
    return result


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def _known_keys(model: Type[BaseModel], source: str) -> List[str]:
    """The keys a layer may set; for --fix-hp its aliases first (`bs` for batch_size)."""
    keys = list(model.model_fields)
    if source != FIX_HP_SOURCE:
        return keys
    aliases = [alias for alias, key in ALIASES.items() if key in keys]
    return aliases + [k for k in keys if k not in aliases]


def _validate(model: Type[ModelT], data: Dict[str, Any], source: str) -> ModelT:
    unknown = [k for k in data if k not in model.model_fields]
    if unknown:
        raise ConfigError(f"{source}: {closest.unknown_key(unknown[0], _known_keys(model, source))}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "config"
        if first["type"] == "missing":
            raise ConfigError(f"{source}: key {key!r} is missing (defaults must list every key)") from exc
        got = f" (got {first['input']!r})" if "input" in first and first["loc"] else ""
        raise ConfigError(f"{source}: {key}: {first['msg']}{got}") from exc


def hardware_file(case_dir: Path, vendor: str, name: HardwareConfig) -> Optional[Path]:
    folder = case_dir / "configs" / vendor
    for stem in (name.name, name.accelerator):
        path = folder / f"{stem}.yaml"
        if path.is_file():
            return path
    return None


def load_config(
    case: str,
    model: Type[ModelT],
    vendor: str,
    config_name: str,
    fix_hp: Optional[str],
    case_dir: Optional[Path] = None,
) -> LoadedConfig[ModelT]:
    case_dir = case_dir or CASES_DIR / case
    name = parse_config_name(config_name)
    defaults_path = case_dir / "defaults.yaml"
    data = _read_yaml(defaults_path)
    _validate(model, data, str(defaults_path))
    files = [str(defaults_path)]

    hw_path = hardware_file(case_dir, vendor, name)
    hw_keys: List[str] = []
    if hw_path is not None:
        hw = _read_yaml(hw_path)
        hw_keys = list(hw)
        data = {**data, **hw}
        _validate(model, data, str(hw_path))
        files.append(str(hw_path))

    overrides = parse_fix_hp(fix_hp)
    data = {**data, **overrides}
    values = _validate(model, data, FIX_HP_SOURCE)
    return LoadedConfig(
        case=case,
        vendor=vendor,
        name=name,
        values=values,
        files=files,
        hardware_file=str(hw_path) if hw_path else None,
        hardware_keys=hw_keys,
        fix_hp=overrides,
    )
