"""What a host runs, as recorded in results.json: ``EnvironmentInfo`` per host
with its ``FrameworkVersions``. probes.py fills them, compare.py compares them.

A field nobody could read is ``unknown``, and ``unknown_reasons`` says why.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

UNKNOWN = "unknown"

FRAMEWORK_FIELDS = ("python", "torch", "cuda", "cudnn", "nccl", "torchvision")


class FrameworkVersions(BaseModel):
    python: str = UNKNOWN
    torch: str = UNKNOWN
    cuda: str = UNKNOWN  # torch.version.cuda; "unknown" for a CPU build
    cudnn: str = UNKNOWN
    nccl: str = UNKNOWN
    torchvision: str = UNKNOWN
    source: str = ""  # "python3 on <host>" or "image <name> on <host>"
    unknown_reasons: dict[str, str] = Field(default_factory=dict)


class EnvironmentInfo(BaseModel):
    host: str
    captured_at: str = ""
    machine_model: str = UNKNOWN
    accelerator_model: str = UNKNOWN
    accelerator_count: int | None = None
    accelerator_memory_mib: float | None = None  # per device, from the smi tool
    accelerator_driver: str = UNKNOWN
    cpu_model: str = UNKNOWN
    network_type: str = UNKNOWN
    network_rate: str = UNKNOWN
    os: str = UNKNOWN
    kernel: str = UNKNOWN  # `uname -r -m`: "5.4.0-113-generic x86_64"
    docker_version: str = UNKNOWN
    framework: FrameworkVersions = Field(default_factory=FrameworkVersions)
    unknown_reasons: dict[str, str] = Field(default_factory=dict)  # field -> why it is unknown

    def comparable_fields(self) -> dict[str, str]:
        """Everything two hosts of one run should agree on, as strings."""
        fields: dict[str, str] = {
            "machine_model": self.machine_model,
            "accelerator_model": self.accelerator_model,
            "accelerator_count": str(self.accelerator_count) if self.accelerator_count is not None else UNKNOWN,
            "accelerator_memory_mib": _number_text(self.accelerator_memory_mib),
            "accelerator_driver": self.accelerator_driver,
            "cpu_model": self.cpu_model,
            "network_type": self.network_type,
            "network_rate": self.network_rate,
            "os": self.os,
            "kernel": self.kernel,
            "docker_version": self.docker_version,
        }
        for name in FRAMEWORK_FIELDS:
            fields[f"framework.{name}"] = getattr(self.framework, name)
        return fields


def _number_text(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:g}"
