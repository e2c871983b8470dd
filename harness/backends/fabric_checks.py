"""The fabric preflight on the hosts themselves (cluster.fabric type ib), run
after the per-host checks and before anything is built: on every host, at once,

- ``ibstat``: the named HCAs exist, their ports are Active and the link rates
  match across hosts (harness/fabric/preflight.py reads the outputs);
- ``ls -d /dev/infiniband``: the RDMA device nodes the containers are given;
- ``ulimit -H -l`` (hard locked-memory limit, KiB): the verbs library pins its
  buffers, and the containers ask for an unlimited limit, which a host whose
  hard limit is lower cannot grant (NCCL then falls back or fails at set-up).

Any problem is bad input: a UserError naming each host and the fact found (exit 2).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.backends.transport import CommandResult, Transport
from harness.core.inventory import Inventory
from harness.errors import HostsNotReady, UserError
from harness.fabric.model import RDMA_DEVICE_DIR, Fabric
from harness.fabric.preflight import ib_problems
from harness.parallel import run_all

CHECK_TIMEOUT_S = 30.0
# Below this hard limit (KiB) memlock is "not unlimited" for RDMA: 64 GiB.
MIN_MEMLOCK_KIB = 64 * 2**20


def fabric_commands(rdma_dir: str = RDMA_DEVICE_DIR) -> dict[str, list[str]]:
    """The checks of one host, by name (each one argv, run side by side)."""
    return {
        "ibstat": ["ibstat"],
        "rdma_dir": ["ls", "-d", "--", rdma_dir],
        "memlock": ["sh", "-c", "ulimit -H -l"],
    }


def _tail(result: CommandResult) -> str:
    text = result.output.strip()
    return text.splitlines()[-1][-200:] if text else f"exit {result.exit_code}"


def memlock_problem(host: str, result: CommandResult, min_kib: int) -> str | None:
    """None when the hard memlock limit is unlimited or at least `min_kib`."""
    if not result.ok:
        return f"{host}: cannot read the memlock limit (`ulimit -H -l`: {_tail(result)})"
    value = result.output.strip().splitlines()[-1].strip() if result.output.strip() else ""
    if value == "unlimited":
        return None
    if value.isdigit() and int(value) >= min_kib:
        return None
    shown = f"{int(value)} KiB" if value.isdigit() else repr(value)
    return (f"{host}: hard memlock limit is {shown}, expected unlimited (RDMA pins memory; the containers "
            "ask for --ulimit memlock=-1:-1); raise it in /etc/security/limits.conf or the engine's service")


def ibstat_problem(host: str, result: CommandResult) -> str | None:
    """Why a host's ibstat output cannot be read at all (then its HCAs are not checked)."""
    if result.timed_out:
        return f"{host}: ibstat did not answer in {CHECK_TIMEOUT_S:g} s"
    if result.exit_code == 127:
        return f"{host}: ibstat is not installed ({_tail(result)}); it comes with infiniband-diags"
    return None


def host_problems(host: str, done: dict[str, CommandResult], rdma_dir: str, min_memlock_kib: int) -> list[str]:
    """What one host's results say is wrong, besides the HCAs ibstat lists."""
    problems = [p for p in (ibstat_problem(host, done["ibstat"]),) if p]
    if not done["rdma_dir"].ok:
        problems.append(f"{host}: {rdma_dir} is missing, so the containers get no RDMA device nodes "
                        f"(is the HCA driver loaded? {_tail(done['rdma_dir'])})")
    problem = memlock_problem(host, done["memlock"], min_memlock_kib)
    if problem:
        problems.append(problem)
    return problems


def check_fabric(fabric: Fabric, hosts: Sequence[tuple[str, Transport]], source: str = "", *,
                 rdma_dir: str = RDMA_DEVICE_DIR, min_memlock_kib: int = MIN_MEMLOCK_KIB) -> dict[str, dict[str, str]]:
    """Run the checks on every host (all at once) and raise a UserError naming
    every problem; return each host's facts (the ibstat CAs, memlock) for the
    preflight report. Nothing to check unless the fabric is ib."""
    if fabric.type != "ib":
        return {}
    commands = fabric_commands(rdma_dir)

    def check(entry: tuple[str, Transport]) -> dict[str, CommandResult]:
        _, transport = entry
        results = run_all(lambda argv: transport.run(argv, timeout=CHECK_TIMEOUT_S), list(commands.values()))
        return dict(zip(commands, results))

    done_by_host = dict(zip((name for name, _ in hosts), run_all(check, list(hosts))))
    problems: list[str] = []
    ibstat_by_host: dict[str, str] = {}
    facts: dict[str, dict[str, str]] = {}
    for host, done in done_by_host.items():
        found = host_problems(host, done, rdma_dir, min_memlock_kib)
        problems += found
        if ibstat_problem(host, done["ibstat"]) is None:  # a failing CA shows in the output, not the status
            ibstat_by_host[host] = done["ibstat"].output
        facts[host] = {"memlock_hard": done["memlock"].output.strip().splitlines()[-1]
                       if done["memlock"].ok and done["memlock"].output.strip() else "unknown"}
    problems += ib_problems(fabric, ibstat_by_host)
    if problems:
        message = "fabric preflight (type ib, HCAs " + ", ".join(fabric.hcas) + ") failed: " + "; ".join(problems)
        # An HCA missing or a port down is that host's fault (BENCH-F04); a limit or a tool is the site's setup.
        unready = {host: found[0] for host, text in ibstat_by_host.items()
                   if (found := ib_problems(fabric, {host: text}))}
        if unready:
            raise HostsNotReady(message, hosts=unready, code="BENCH-F04", file=source, field="cluster.fabric")
        raise UserError(message, file=source, field="cluster.fabric")
    return facts


def check_inventory_fabric(inventory: Inventory, hosts: Sequence[tuple[str, Transport]]) -> dict[str, dict[str, str]]:
    """check_fabric for the inventory's own fabric (the backends' call)."""
    return check_fabric(inventory.cluster.fabric, hosts, inventory.source)
