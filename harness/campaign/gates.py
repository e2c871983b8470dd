"""Health gates before each job of a campaign. A failing gate names the host and
the fact; the campaign records the attempt as `infra` and moves on (retried
like any infra failure).

- no leftover `bench.*` container on the job's hosts (backend.leftovers);
- the device count the vendor's smi tool (harness/devices/registry.py) reports
  equals the inventory's `devices` for each host (skipped for a vendor without
  a tool, such as cpu).
"""

from __future__ import annotations

from collections.abc import Callable

from harness.backends.base import ClusterBackend
from harness.backends.transport import Transport
from harness.campaign.suite import Gates
from harness.core.inventory import Host
from harness.devices.registry import inventory_commands
from harness.errors import HarnessError
from harness.parallel import run_all

SMI_TIMEOUT_S = 60.0


def device_problem(transport: Transport, host: Host, smi: str) -> str | None:
    """What is wrong with the host's devices as the smi tool sees them, or None."""
    argv, parse = inventory_commands(smi)[0]
    try:
        result = transport.run(list(argv), timeout=SMI_TIMEOUT_S)
    except HarnessError as exc:
        return f"{host.name}: unreachable while asking {argv[0]}: {str(exc).splitlines()[0]}"
    if not result.ok:
        what = "timed out" if result.exit_code is None else f"exited {result.exit_code}"
        return f"{host.name}: `{argv[0]}` {what}: {result.output.strip()[-200:]}"
    count = len(parse(result.output).models)
    if count != host.devices:
        return f"{host.name}: {argv[0]} sees {count} device(s), the inventory says devices: {host.devices}"
    return None


def check_gates(backend: ClusterBackend, transport_for: Callable[[Host], Transport], hosts: list[Host],
                smi: str | None, gates: Gates) -> list[str]:
    """Every failing gate of these hosts, one line each (empty: all pass)."""
    problems: list[str] = []
    if gates.leftovers:
        try:
            leftovers = backend.leftovers(hosts)
        except HarnessError as exc:
            problems.append(f"cannot list the containers on {', '.join(h.name for h in hosts)}: {exc}")
        else:
            problems += [f"{c.host}: leftover container {c.describe()}" for c in leftovers]
    if gates.devices and smi:
        def one(host: Host) -> str | None:
            try:
                transport = transport_for(host)
            except HarnessError as exc:
                return f"{host.name}: unreachable: {str(exc).splitlines()[0]}"
            return device_problem(transport, host, smi)

        problems += [problem for problem in run_all(one, hosts) if problem]
    return problems
