"""Reference data of an accelerator, one YAML file per accelerator in ``reference/``
(``reference/A100.yaml``): dense peak TFLOPS per precision, memory and TDP,
expected p_core per case x precision x config x batch, and expected all-reduce
bus bandwidth per fabric (within a node, and per HCA across nodes). Every
figure names its source: a ``source`` field the reports print, and a comment
on its line in the file (tests/test_expect.py checks both).

A file that does not match the model is a UserError naming the file and the
field; an accelerator without a file (cpu) has no reference, which is not an
error: its MFU and % of expected are ``/`` with that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationInfo, field_validator

from harness import REPO_ROOT
from harness.errors import UserError
from harness.yamlfile import load_model

REFERENCE_DIR = REPO_ROOT / "reference"

# The peak keys a reference file (and the inventory's cluster.peak_tflops) may hold.
PeakKey = Literal["fp32", "tf32", "fp16", "bf16"]
PEAK_KEYS: tuple[PeakKey, ...] = ("fp32", "tf32", "fp16", "bf16")
# A run's precision label (cases/devices.py PrecisionPlan.used) -> the dense peak it is
# judged against: amp is fp16 autocast, so the fp16 tensor peak; fp32 has TF32 off.
PEAK_KEY_OF_PRECISION: dict[str, PeakKey] = {"fp32": "fp32", "tf32": "tf32", "amp": "fp16", "fp16": "fp16",
                                             "bf16": "bf16"}

Source = str  # a citation: document, table, URL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedThroughput(_Strict):
    """A published p_core (global samples/s) for one recipe on this accelerator."""

    case: str = Field(min_length=1)
    precision: Literal["fp32", "tf32", "amp", "bf16"]  # as the harness labels a run
    config: str = Field(pattern=r"^[1-9][0-9]*x[1-9][0-9]*$")  # nnodes x nproc
    batch_size: int = Field(gt=0)  # per device
    image_size: int = Field(default=224, gt=0)
    p_core: float = Field(gt=0)
    source: Source = Field(min_length=1)
    note: str = ""  # what may make a run differ from the published recipe


class IntraNodeBusbw(_Strict):
    """All-reduce busbw (GB/s) of `nproc` devices of one node over the node's own links."""

    nproc: int = Field(ge=2)
    link: str = Field(min_length=1)  # "NVLink 3 via NVSwitch"
    busbw_gbps: float = Field(gt=0)
    source: Source = Field(min_length=1)


class PerHcaBusbw(_Strict):
    """All-reduce busbw (GB/s) one HCA of `link_gbps` carries between nodes."""

    link_gbps: int = Field(gt=0)  # line rate of one HCA: 100 (EDR), 200 (HDR), 400 (NDR)
    busbw_gbps: float = Field(gt=0)
    source: Source = Field(min_length=1)


class AcceleratorReference(_Strict):
    accelerator: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    # Substrings of the device name torch reports (the world event's device_name); a
    # run on another device is not judged against this file. Empty: not checked.
    device_names: list[str] = Field(default_factory=list)
    memory_gib: float | None = Field(default=None, gt=0)
    tdp_w: float | None = Field(default=None, gt=0)
    spec_source: Source = Field(default="", validate_default=True)  # memory and TDP
    peak_tflops: dict[PeakKey, PositiveFloat] = Field(default_factory=dict)  # dense, per device
    peak_source: Source = Field(default="", validate_default=True)
    expected: list[ExpectedThroughput] = Field(default_factory=list)
    busbw_intra_node: list[IntraNodeBusbw] = Field(default_factory=list)
    busbw_per_hca: list[PerHcaBusbw] = Field(default_factory=list)

    @field_validator("spec_source")
    @classmethod
    def _spec_sourced(cls, value: str, info: ValidationInfo) -> str:
        if not value and (info.data.get("memory_gib") is not None or info.data.get("tdp_w") is not None):
            raise ValueError("required with memory_gib or tdp_w: where they come from")
        return value

    @field_validator("peak_source")
    @classmethod
    def _peaks_sourced(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.data.get("peak_tflops"):
            raise ValueError("required with peak_tflops: where the figures come from")
        return value

    def runs_on(self, device_name: str) -> bool:
        """Whether a device torch names so is this accelerator (True when the file names none)."""
        lowered = device_name.lower()
        return not self.device_names or any(name.lower() in lowered for name in self.device_names)


def reference_file(accelerator: str, folder: Path = REFERENCE_DIR) -> Path:
    return folder / f"{accelerator}.yaml"


def load_reference(accelerator: str, folder: Path = REFERENCE_DIR) -> AcceleratorReference | None:
    """The accelerator's reference, None when it has no file; UserError on a bad one."""
    path = reference_file(accelerator, folder)
    if not path.is_file():
        return None
    reference = load_model(path, AcceleratorReference)
    if reference.accelerator != accelerator:
        raise UserError(f"expected {accelerator!r} (the file's name), got {reference.accelerator!r}",
                        file=str(path), field="accelerator")
    return reference


def reference_files(folder: Path = REFERENCE_DIR) -> list[Path]:
    return sorted(folder.glob("*.yaml"))
