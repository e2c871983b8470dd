"""A campaign's durable state: results/campaigns/<name>/<stamp>/state.json,
rewritten atomically (harness/core/record.write_atomic) after every transition,
so a controller that is killed or rebooted can be resumed from it.

One unit per (suite job, repeat); each unit has its attempts, each attempt its
own run id (results/<run_id>/, one history row).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from harness.core.record import write_atomic
from harness.core.results import FailureKind
from harness.errors import UserError
from harness.faults.codes import Fault
from harness.faults.codes import now_iso as now_iso  # one clock format for faults and campaign stamps
from harness.faults.quarantine import QuarantineEntry

STATE_FILE = "state.json"
CAMPAIGNS_DIR = "campaigns"

# interrupted: its controller was stopped while it ran (--resume runs it again).
UnitStatus = Literal["waiting", "running", "success", "failed", "interrupted"]
# abandoned: its controller died while it ran (found again on --resume);
# interrupted: the controller was stopped (Ctrl-C, SIGTERM, SIGHUP). Neither counts as a retry.
AttemptStatus = Literal["running", "success", "failed", "abandoned", "interrupted"]
CampaignStatus = Literal["running", "interrupted", "finished"]


class Attempt(BaseModel):
    number: int  # 1-based within its unit
    run_id: str
    status: AttemptStatus = "running"
    failure_kind: FailureKind | None = None
    failure: str | None = None
    results_json: str | None = None  # where its record is
    started_at: str = Field(default_factory=now_iso)
    finished_at: str | None = None
    hosts: list[str] = Field(default_factory=list)  # the hosts it ran on, node 0 first (spares in place)
    replaced: dict[str, str] = Field(default_factory=dict)  # host -> the spare that took its place
    # Quarantined hosts no spare could replace: the attempt was skipped (infra, not retried).
    no_spare: list[str] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)  # attributed to a host: gates, lock, the run, pairwise runs

    @property
    def counts_as_try(self) -> bool:
        """Abandoned and interrupted attempts are rerun without using up a retry."""
        return self.status in ("success", "failed")


class Unit(BaseModel):
    job: int  # the suite job's 0-based index
    repeat: int  # 1-based
    repeats: int
    case: str
    vendor: str
    accelerator: str
    config: str
    fix_hp: str | None = None
    hosts: list[str] = Field(default_factory=list)
    # A fresh training seed per unit (each repeat its own), kept here so a resumed
    # attempt reuses it; None when the job's fix_hp pins `seed` itself.
    seed: int | None = None
    status: UnitStatus = "waiting"
    attempts: list[Attempt] = Field(default_factory=list)

    @property
    def label(self) -> str:
        repeat = f" repeat {self.repeat}/{self.repeats}" if self.repeats > 1 else ""
        hp = f" {self.fix_hp}" if self.fix_hp else ""
        accelerator = f" {self.accelerator}" if self.accelerator != self.vendor else ""
        return f"job {self.job + 1}{repeat}: {self.case} {self.vendor}{accelerator} {self.config}{hp}"

    @property
    def tries(self) -> int:
        return sum(1 for attempt in self.attempts if attempt.counts_as_try)

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def same_job(self, other: Unit) -> bool:
        keys = ("job", "repeat", "case", "vendor", "accelerator", "config", "fix_hp")
        return all(getattr(self, key) == getattr(other, key) for key in keys)


class HostHealth(BaseModel):
    """What the health gates last read on one host (harness/campaign/gates.py),
    kept so the next check can tell what happened since."""

    checked_at: str = Field(default_factory=now_iso)
    errors: dict[str, dict[str, int]] = Field(default_factory=dict)  # device index -> ECC counter -> value
    boot_id: str | None = None  # the kernel's boot the driver error lines below belong to
    kernel_events: int = 0  # driver error lines (XID) in that boot's kernel log
    last_event_s: float | None = None  # the newest one's stamp, seconds since boot


PairVerdict = Literal["ok", "slow", "failed"]


class PairRun(BaseModel):
    """One pairwise all-reduce run of a bisection (its own run, results.json)."""

    hosts: list[str]
    run_id: str
    verdict: PairVerdict
    peak_busbw_gbps: float | None = None
    detail: str = ""  # the failure's first line, or how far below the bar


class Bisection(BaseModel):
    """Finding the bad node of a multi-node job (harness/campaign/bisect.py)."""

    job: int  # the suite job's 0-based index
    run_id: str  # the attempt that triggered it
    trigger: str  # what failed: the bandwidth gate, or infra with no host named
    hosts: list[str]
    min_busbw_gbps: float | None = None  # what "slow" meant
    pairs: list[PairRun] = Field(default_factory=list)
    named: str | None = None  # the host common to every slow or failed pair
    code: str | None = None  # BENCH-F02 slow in every pair, BENCH-F03 failed in every pair
    suspects: list[str] = Field(default_factory=list)  # when no single host could be named
    note: str = ""  # the decision in one line


class Controller(BaseModel):
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)


class CampaignState(BaseModel):
    name: str
    stamp: str
    suite: str  # the suite file
    inventory: str
    status: CampaignStatus = "running"
    controller: Controller = Field(default_factory=Controller)
    started_at: str = Field(default_factory=now_iso)
    updated_at: str = Field(default_factory=now_iso)
    finished_at: str | None = None
    exit_status: int | None = None
    resumed: list[str] = Field(default_factory=list)  # when --resume continued it
    units: list[Unit]
    health: dict[str, HostHealth] = Field(default_factory=dict)  # host name -> its last gate reading
    # The quarantine entries this campaign made (results/quarantine.json holds them for every run).
    quarantined: list[QuarantineEntry] = Field(default_factory=list)
    bisections: list[Bisection] = Field(default_factory=list)

    def count(self, status: UnitStatus) -> int:
        return sum(1 for unit in self.units if unit.status == status)


class StateStore:
    """The state file of one campaign folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / STATE_FILE

    def save(self, state: CampaignState) -> None:
        state.updated_at = now_iso()
        write_atomic(self.path, state.model_dump_json(indent=2))

    def load(self) -> CampaignState:
        try:
            return CampaignState.model_validate_json(self.path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"cannot read the campaign state: {exc.strerror or exc}", file=str(self.path)) from exc
        except ValidationError as exc:
            raise UserError(f"not a campaign state written by this harness: {exc.errors()[0]['msg']}",
                            file=str(self.path)) from exc


def campaign_dir(results: Path, name: str) -> Path:
    return results / CAMPAIGNS_DIR / name


def new_folder(results: Path, name: str) -> Path:
    """results/campaigns/<name>/<UTC stamp>, created; a second in the same second gets -2, -3..."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = campaign_dir(results, name)
    root.mkdir(parents=True, exist_ok=True)
    for suffix in ["", *(f"-{n}" for n in range(2, 100))]:
        folder = root / f"{stamp}{suffix}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise UserError(f"too many campaigns started this second in {root}")


def folders(results: Path, name: str) -> list[Path]:
    """This campaign's folders that hold a state, oldest first."""
    root = campaign_dir(results, name)
    return sorted(p.parent for p in root.glob(f"*/{STATE_FILE}")) if root.is_dir() else []


def all_folders(results: Path) -> list[Path]:
    """Every campaign folder under results/campaigns, oldest first (by stamp)."""
    root = results / CAMPAIGNS_DIR
    found = [p.parent for p in root.glob(f"*/*/{STATE_FILE}")] if root.is_dir() else []
    return sorted(found, key=lambda p: (p.name, p.parent.name))
