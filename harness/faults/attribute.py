"""Which faults a run attributes to its hosts (harness/faults/codes.py): from the
error that ended its preflight or a stage (a host that did not answer, a work
directory that cannot be made, a device missing, an engine down, an image copy
that failed there) and from its record (a host lost mid-run, a fabric fallback,
a straggler). One Fault per host and code per run; the runner puts them into
RunResult.faults, and a campaign that records an unstarted attempt itself asks
`faults_from_preflight` for the faults of the error that stopped it.
"""

from __future__ import annotations

from harness.core.results import RunResult
from harness.errors import HostFault, HostsNotReady, HostUnreachable
from harness.fabric.model import Fabric
from harness.faults.codes import Fault
from harness.faults.settings import STRAGGLER

UNREACHABLE = "BENCH-H01"  # did not answer before the run started
LOST = "BENCH-H02"  # stopped answering after
FALLBACK = "BENCH-F01"
MAX_EVIDENCE = 300


def _one_line(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= MAX_EVIDENCE else first[:MAX_EVIDENCE - 3] + "..."


def _from_error(exc: BaseException, run_id: str, started: bool) -> list[Fault]:
    if isinstance(exc, HostFault):
        return [Fault(host=host, code=exc.code, evidence=_one_line(str(exc)), run_id=run_id) for host in exc.hosts]
    if isinstance(exc, HostsNotReady):
        return [Fault(host=host, code=exc.code, evidence=_one_line(found), run_id=run_id)
                for host, found in exc.hosts.items()]
    if isinstance(exc, HostUnreachable) and exc.host is not None:
        # A connection that drops during the preflight is a host that did not answer it.
        code = exc.code or (LOST if started else UNREACHABLE)
        return [Fault(host=exc.host, code=code, evidence=_one_line(str(exc)), run_id=run_id)]
    return []


def faults_from_preflight(exc: BaseException, run_id: str) -> list[Fault]:
    """The faults of an error that stopped a run before it started (the preflight,
    the host-lock check): BENCH-H01 for a host that did not answer, or the error's
    own code (BENCH-H03 work directory, BENCH-G01 device missing, BENCH-H05 engine,
    BENCH-F04 an HCA missing or its port down).
    [] when no host is at fault (bad input, a host key or login to fix)."""
    return _from_error(exc, run_id, started=False)


def faults_from_stage(exc: BaseException, run_id: str) -> list[Fault]:
    """The faults of an error that ended a started run's stage (image, launch):
    BENCH-H02 for a host that stopped answering, BENCH-I01 for an image copy."""
    return _from_error(exc, run_id, started=True)


def _lost(result: RunResult) -> list[Fault]:
    why = _one_line(result.failure or "")
    return [Fault(host=host, code=LOST, run_id=result.run_id,
                  evidence=f"no answer over SSH or from its engine past the lost-host limit; the run: {why}")
            for host in result.lost_hosts]


def _fallbacks(result: RunResult, fabric: Fabric) -> list[Fault]:
    """Nodes on sockets although the fabric is ib; with allow_fallback the site accepts it: no fault."""
    if fabric.type != "ib" or fabric.allow_fallback:
        return []
    return [Fault(host=node.host, code=FALLBACK, run_id=result.run_id,
                  evidence=f"node {node.node_rank}: {node.transport.library} used TCP sockets although the fabric "
                           f"is ib with HCAs {', '.join(fabric.hcas)}"
                           + (f" ({'; '.join(node.transport.notes)[:150]})" if node.transport.notes else ""))
            for node in result.nodes if node.transport is not None and node.transport.transport == "socket"]


def _stragglers(result: RunResult) -> list[Fault]:
    by_host: dict[str, list[str]] = {}
    for slow in result.stragglers:
        by_host.setdefault(slow.host, []).append(
            f"rank {slow.rank} ({slow.device}) score {slow.score:.2f}: compute p50 {slow.compute_s_p50 * 1000:.1f} ms "
            f"vs {slow.fastest_compute_s_p50 * 1000:.1f} ms")
    threshold = f" below {result.straggler_threshold:g}" if result.straggler_threshold is not None else ""
    return [Fault(host=host, code=STRAGGLER, run_id=result.run_id, evidence=_one_line(f"{'; '.join(ranks)}{threshold}"))
            for host, ranks in by_host.items()]


def run_faults(result: RunResult, fabric: Fabric, stage: list[Fault] | None = None) -> list[Fault]:
    """Every fault a finished run attributes to a host: the stage error's (`stage`,
    from faults_from_stage), lost hosts, fabric fallbacks, stragglers; one per host
    and code, in that order."""
    found = [*(stage or []), *_lost(result), *_fallbacks(result, fabric), *_stragglers(result)]
    unique: dict[tuple[str, str], Fault] = {}
    for fault in found:
        unique.setdefault((fault.host, fault.code), fault)
    return list(unique.values())
