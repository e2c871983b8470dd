"""The suite file: the night's jobs. Validated like the inventory (pydantic, every
error names the file, the job and the field, exit 2); a job's own settings win
over the suite's `defaults`.

    name: nightly
    hosts: ../hosts.yaml                  # relative to this file
    defaults: {vendor: nvidia, repeats: 1, retries: 2, timeout: 3h, stall_timeout: 15m}
    notify: {webhook: "http://ops.example/hook", command: ["/usr/local/bin/page-oncall"]}
    noise: {runs: 10, k: 3}               # regressions: beyond k x 1.4826 x MAD of the last runs
    spares: [node9]                       # inventory hosts that take a quarantined or unreachable host's place
    quarantine: {window: 12h, expiry: 24h}
    jobs:
      - {case: resnet50, config: 2x8, reference: ../pages/nvidia-resnet50.md}
      - {case: vit, config: 2x8, fix_hp: "bs=32", repeats: 5}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from harness.durations import parse_duration as parse_duration
from harness.errors import UserError
from harness.faults.settings import QuarantineSettings
from harness.hostlock import DEFAULT_STALE_AFTER_S
from harness.report.noise import DEFAULT_K, DEFAULT_RUNS, NoiseRule
from harness.yamlfile import describe_validation_error, read_mapping

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
DEFAULT_TIMEOUT_S = 24 * 3600.0
DEFAULT_RETRIES = 2


class SuiteError(UserError):
    """A suite file that cannot be run as written (exit 2, nothing started)."""


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Delay = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class JobSettings(BaseModel):
    """What `defaults` and each job may set; None: not set here."""

    model_config = ConfigDict(extra="forbid")

    vendor: str | None = None
    accelerator: str | None = None  # default: the vendor spec's
    fix_hp: str | None = None
    repeats: int | None = Field(default=None, ge=1, le=100)
    retries: int | None = Field(default=None, ge=0, le=20)  # infra failures retried this many times
    timeout: Duration | None = None
    stall_timeout: Duration | None = None  # default: the inventory's cluster.stall_timeout_s
    retry_stalled: bool | None = None  # also retry `stalled` attempts
    real_data: bool | None = None


class SuiteJob(JobSettings):
    case: str
    config: str
    reference: str | None = None  # a vendor README page, relative to the suite file
    hosts: list[str] | None = Field(default=None, min_length=1)  # inventory host names, in node-rank order

    @field_validator("fix_hp", mode="before")
    @classmethod
    def _fix_hp_text(cls, value: Any) -> Any:
        return None if value is None else str(value)


class Notify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook: str | None = Field(default=None, pattern=r"^https?://\S+$")
    command: list[str] | None = Field(default=None, min_length=1)  # gets the JSON on stdin
    timeout: Duration = 20.0


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    leftovers: bool = True  # no bench.* container on the job's hosts
    devices: bool = True  # the vendor's smi tool sees the inventory's device count
    # Before each job, cases/allreduce on its nodes must reach this peak bus
    # bandwidth (GB/s); busbw_fix_hp sets its sweep (e.g. "max_bytes=268435456").
    min_busbw_gbps: float | None = Field(default=None, gt=0)
    busbw_fix_hp: str | None = None


class Noise(BaseModel):
    """How the summary judges each run against its history (harness/report/noise.py)."""

    model_config = ConfigDict(extra="forbid")

    runs: int = Field(default=DEFAULT_RUNS, ge=1, le=1000)  # the last N successful comparable runs
    k: float = Field(default=DEFAULT_K, gt=0)  # beyond k x 1.4826 x MAD of them is beyond noise

    def rule(self) -> NoiseRule:
        return NoiseRule(runs=self.runs, k=self.k)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    hosts: str = "../hosts.yaml"
    defaults: JobSettings = Field(default_factory=JobSettings)
    notify: Notify = Field(default_factory=Notify)
    gates: Gates = Field(default_factory=Gates)
    noise: Noise = Field(default_factory=Noise)  # the regression check of the summary
    backoff: Delay = 60.0  # before the first retry; doubles each retry, at most backoff_max
    backoff_max: Delay = 900.0
    # A lock whose holder gave no sign of life for this long is stale (taken over).
    lock_stale_after: Duration = DEFAULT_STALE_AFTER_S
    # Inventory hosts kept aside: one takes the place of a job's host that is
    # quarantined or unreachable (same device count; harness/campaign/spares.py).
    spares: list[str] = Field(default_factory=list)
    # The inventory's cluster.quarantine unless the suite sets its own (harness/faults/settings.py).
    quarantine: QuarantineSettings | None = None
    jobs: list[SuiteJob] = Field(min_length=1)

    @field_validator("spares")
    @classmethod
    def _spares_once(cls, value: list[str]) -> list[str]:
        twice = [name for name in dict.fromkeys(value) if value.count(name) > 1]
        if twice:
            raise ValueError(f"{twice[0]!r} is listed twice")
        return value


@dataclass(frozen=True)
class SuiteEntry:
    """One job of the suite with its defaults applied."""

    index: int  # 0-based position in `jobs`
    case: str
    vendor: str
    accelerator: str | None
    config: str
    fix_hp: str | None
    repeats: int
    retries: int
    timeout_s: float
    stall_timeout_s: float | None
    retry_stalled: bool
    real_data: bool
    reference: Path | None
    hosts: tuple[str, ...] | None

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def field(self) -> str:
        return f"jobs[{self.index}]"

    def describe(self) -> str:
        return f"job {self.number} ({self.case} {self.vendor} {self.config}" + (
            f" {self.fix_hp})" if self.fix_hp else ")")


@dataclass(frozen=True)
class LoadedSuite:
    suite: Suite
    source: Path  # the suite file
    inventory: Path  # its hosts file, resolved
    entries: list[SuiteEntry]

    @property
    def name(self) -> str:
        return self.suite.name


def _field_text(path: str) -> str:
    """jobs.[2].fix_hp -> jobs[2] (job 3).fix_hp"""
    return re.sub(r"jobs\.\[(\d+)\]", lambda m: f"jobs[{m.group(1)}] (job {int(m.group(1)) + 1})", path)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _entry(index: int, job: SuiteJob, defaults: JobSettings, base: Path, source: Path) -> SuiteEntry:
    def pick(name: str, fallback: Any = None) -> Any:
        value = getattr(job, name)
        if value is None:
            value = getattr(defaults, name)
        return fallback if value is None else value

    vendor = pick("vendor")
    if vendor is None:
        raise SuiteError("vendor is not set (here or in defaults)", file=str(source), field=_field_text(f"jobs.[{index}]"))
    return SuiteEntry(
        index=index, case=job.case, vendor=vendor, accelerator=pick("accelerator"), config=job.config,
        fix_hp=pick("fix_hp"), repeats=pick("repeats", 1), retries=pick("retries", DEFAULT_RETRIES),
        timeout_s=pick("timeout", DEFAULT_TIMEOUT_S), stall_timeout_s=pick("stall_timeout"),
        retry_stalled=pick("retry_stalled", False), real_data=pick("real_data", False),
        reference=_resolve(base, job.reference) if job.reference else None,
        hosts=tuple(job.hosts) if job.hosts else None,
    )


def load_suite(path: Path) -> LoadedSuite:
    """The suite file as a model, its jobs resolved (file-level checks only;
    harness/campaign/check.py checks each job against the cases, vendors and hosts)."""
    if not path.is_file():
        raise SuiteError("suite file not found", file=str(path))
    data = read_mapping(path)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        field, message = describe_validation_error(exc, data)
        raise SuiteError(message, file=str(path), field=_field_text(field)) from exc
    base = path.resolve().parent
    entries = [_entry(i, job, suite.defaults, base, path) for i, job in enumerate(suite.jobs)]
    return LoadedSuite(suite=suite, source=path, inventory=_resolve(base, suite.hosts), entries=entries)
