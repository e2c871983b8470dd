"""The fault codes: one stable code and one line of text per problem the
harness attributes to a host. The README's fault-code table is this table
(tests/test_fault_codes.py checks that they agree).

A code is `severe` when one occurrence quarantines the host: the hardware
itself said it is broken (uncorrected ECC rise, a driver error that needs a
reset, a device gone). Any other code quarantines on its second occurrence
within the window (quarantine.py).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class FaultCode:
    code: str
    text: str
    severe: bool = False


_TABLE: tuple[FaultCode, ...] = (
    FaultCode("BENCH-H01", "unreachable (SSH did not answer at preflight)"),
    FaultCode("BENCH-H02", "lost mid-run (silent past the lost-host limit)"),
    FaultCode("BENCH-H03", "work directory unusable (cannot be created or written, disk full)"),
    FaultCode("BENCH-H04", "leftover benchmark container before the job"),
    FaultCode("BENCH-H05", "container engine not usable (docker did not answer at preflight)"),
    FaultCode("BENCH-G01", "device missing (the smi tool sees fewer devices than the inventory)", severe=True),
    FaultCode("BENCH-G02", "foreign process on the devices"),
    FaultCode("BENCH-G03", "uncorrected ECC rise", severe=True),
    FaultCode("BENCH-G04", "driver error that needs a reset (XID)", severe=True),
    FaultCode("BENCH-G05", "driver error (XID) in the kernel log"),
    FaultCode("BENCH-G06", "the smi tool failed or timed out"),
    FaultCode("BENCH-I01", "image copy or load failed on the host"),
    FaultCode("BENCH-F01", "fabric fallback (the collective library did not use the fabric asked for)"),
    FaultCode("BENCH-F02", "slow in every pair (pairwise all-reduce)"),
    FaultCode("BENCH-F03", "failed in every pair (pairwise all-reduce)"),
    FaultCode("BENCH-F04", "fabric not ready at preflight (an HCA missing or its port not Active)"),
    FaultCode("BENCH-S01", "straggler (slowest rank by per-rank compute time)"),
)
CODES: dict[str, FaultCode] = {entry.code: entry for entry in _TABLE}

# NVIDIA XIDs after which the GPU needs a reset or the node a reboot (NVIDIA's
# "XID Errors" table: 48 DBE, 63/64 row remapping, 74 NVLink, 79 fallen off the
# bus, 94/95 contained/uncontained ECC, 119/120 GSP errors).
RESET_XIDS = frozenset({48, 63, 64, 74, 79, 94, 95, 119, 120})
_XID = re.compile(r"\bXid\b\s*(?:\([^)]*\))?:\s*(\d+)", re.IGNORECASE)


def xid_code(line: str) -> str:
    """BENCH-G04 for a kernel line whose XID needs a reset, else BENCH-G05."""
    found = _XID.search(line)
    return "BENCH-G04" if found and int(found.group(1)) in RESET_XIDS else "BENCH-G05"


def code_line(code: str) -> str:
    entry = CODES.get(code)
    return f"{code} {entry.text}" if entry else code


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Fault(BaseModel):
    """One occurrence of a fault code on a host, as results.json, the history and
    the campaign state record it."""

    host: str
    code: str
    evidence: str  # one line: what was seen ("device 3: uncorrected ECC errors 0 -> 2")
    run_id: str = ""  # the run it was seen in (or before, for a gate); "" for a manual entry
    time: str = Field(default_factory=now_iso)

    @property
    def severe(self) -> bool:
        entry = CODES.get(self.code)
        return bool(entry and entry.severe)

    def line(self) -> str:
        return f"{self.host}: {self.code} {self.evidence}"
