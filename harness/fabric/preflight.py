"""Fabric checks before anything is built, as pure functions over each host's
``ibstat`` output (the caller runs the tool; a failure is bad input, exit 2):

- every HCA the fabric names exists on every host;
- its port is Active (the named port, or with no port named, at least one);
- the link rate of each named HCA is the same on every host: a 100 Gb/s
  straggler caps a ring all-reduce for the whole job.

Each problem line starts with the host and says the fact found and the one
expected.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.fabric.model import Fabric
from harness.hostinfo.parsers import IbstatPort, parse_ibstat_ports


def _rate(rate: float | None) -> str:
    return f"{rate:g} Gb/s" if rate is not None else "no rate"


def _port_problem(host: str, hca: str, port: int | None, ports: list[IbstatPort]) -> tuple[str | None, float | None]:
    """(problem or None, the rate in use) of one fabric entry on one host."""
    if port is not None:
        chosen = [p for p in ports if p.port == port]
        if not chosen:
            have = ", ".join(str(p.port) for p in ports) or "none"
            return f"{host}: {hca} has no port {port} (ibstat lists ports {have})", None
        state = chosen[0]
        if state.state.lower() != "active":
            return (f"{host}: {hca} port {port} is {state.state or 'in no state'} (physical state "
                    f"{state.physical_state or 'unknown'}), expected Active"), None
        return None, state.rate
    active = [p for p in ports if p.state.lower() == "active"]
    if not active:
        states = "; ".join(f"port {p.port} {p.state or '?'} ({p.physical_state or '?'})" for p in ports) or "no ports"
        return f"{host}: {hca} has no Active port ({states}), expected one Active", None
    return None, max((p.rate for p in active if p.rate is not None), default=None)


def ib_problems(fabric: Fabric, ibstat_by_host: Mapping[str, str]) -> list[str]:
    """What is wrong with the fabric's HCAs on these hosts, from each host's
    ``ibstat`` output; nothing for a fabric that is not ``ib``."""
    if fabric.type != "ib":
        return []
    problems: list[str] = []
    rates: dict[str, dict[str, float | None]] = {}  # fabric entry -> host -> rate
    for host, text in ibstat_by_host.items():
        report = parse_ibstat_ports(text)
        for entry, (hca, port) in zip(fabric.hcas, fabric.hca_ports()):
            if hca not in report.cas:
                listed = ", ".join(sorted(report.cas)) or "none"
                said = " (ibstat: stat of the device failed)" if hca in report.missing else ""
                problems.append(f"{host}: HCA {hca} not found{said}; ibstat lists {listed}")
                continue
            problem, rate = _port_problem(host, hca, port, report.cas[hca])
            if problem is not None:
                problems.append(problem)
            else:
                rates.setdefault(entry, {})[host] = rate
    for entry, by_host in rates.items():
        if len(set(by_host.values())) > 1:
            shown = ", ".join(f"{host} {_rate(rate)}" for host, rate in by_host.items())
            problems.append(f"{', '.join(by_host)}: {entry} link rates differ ({shown}); "
                            "expected the same rate on every host")
    return problems
