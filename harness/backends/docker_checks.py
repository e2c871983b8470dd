"""The SSH + Docker backend's checks of one host before a run (harness/backends/docker.py
preflight): commands run, docker answers, the run folder can be made, disk, clock,
devices, data, no container of the same name, the rendezvous port free on node 0.
All in one round trip. Each answer is read between markers the check prints
(harness/backends/marked.py), so a login shell's banner is never taken for the
clock, the Docker version or the free disk."""

from __future__ import annotations

import re
import time

from harness.backends.launch import docker_cli
from harness.backends.marked import UnmarkedAnswer, run_marked
from harness.backends.transport import CommandResult, Transport
from harness.core.plan import NodePlan, RunPlan
from harness.errors import HostUnreachable, UserError
from harness.parallel import run_all

QUICK_S = 30.0
MAX_CLOCK_SKEW_S = 2.0
MIN_FREE_DISK_GIB = 5.0
CONTAINER_ID_RE = re.compile(r"[0-9a-f]{12,64}")


class MasterPortBusy(UserError):
    """The rendezvous port is taken on the first host (a run or a process still holds it)."""


def check_host(transport: Transport, plan: RunPlan, node: NodePlan, source: str) -> tuple[dict[str, str], list[str]]:
    """(facts, warnings) of the node's host; a UserError names what makes it unusable."""
    host = node.host
    field = f"hosts.{host.name}"
    # The checks are independent: one round trip for all of them. The clock's
    # skew is judged against the round trip's middle (seconds of slack, not ms).
    checks: dict[str, list[str]] = {
        "date": ["date", "+%s.%N"],
        "docker": [*docker_cli(node.host), "version", "--format", "{{.Server.Version}}"],
        "mkdir": ["mkdir", "-p", "--", f"{node.host_run_dir}/logs"],
        "df": ["df", "-Pk", host.work_dir],
        "leftovers": [*docker_cli(node.host), "ps", "-aq", "--filter", f"name=^{node.container_name}$"],
    }
    devices = plan.vendor.device_nodes(host.devices)
    if devices:
        checks["devices"] = ["ls", "-d", "--", *devices]
    if host.data_dir and not plan.job.synthetic:
        checks["data"] = ["test", "-d", host.data_dir]
    if node.node_rank == 0:
        # SO_REUSEADDR as torchrun's store sets it: a port in TIME_WAIT after
        # the previous run is free for it, a listening one is not.
        checks["port"] = ["python3", "-c", "import socket,sys; s=socket.socket(); "
                          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                          "s.bind(('', int(sys.argv[1])))", str(plan.master_port)]

    def run(argv: list[str]) -> CommandResult:
        try:
            return run_marked(transport, argv, timeout=QUICK_S)
        except UnmarkedAnswer as exc:
            raise HostUnreachable(f"cannot run commands on {host.name}: {exc}", file=source, field=field) from exc

    before = time.time()
    done = dict(zip(checks, run_all(run, list(checks.values()))))
    after = time.time()
    clock = done["date"]
    if not clock.ok:
        raise HostUnreachable(f"cannot run commands on {host.name}: {clock.output.strip()}",
                              file=source, field=field)

    facts: dict[str, str] = {}
    warnings: list[str] = []
    try:
        skew = float(clock.output.split()[-1]) - (before + after) / 2
        facts["clock_skew_s"] = f"{skew:+.3f}"
        if abs(skew) > MAX_CLOCK_SKEW_S:
            warnings.append(f"{host.name}: clock is {skew:+.1f} s off the controller's; "
                            "cross-host timestamps will be skewed")
    except (ValueError, IndexError):
        facts["clock_skew_s"] = "unknown"
    version = done["docker"]
    if not version.ok:
        raise HostUnreachable(f"docker is not usable on {host.name}: {version.output.strip()[-300:]}",
                              file=source, field=field)
    facts["docker"] = version.output.strip().splitlines()[-1] if version.output.strip() else "unknown"
    if not done["mkdir"].ok:
        raise HostUnreachable(f"cannot create {node.host_run_dir} on {host.name}: {done['mkdir'].output.strip()}",
                              file=source, field=f"{field}.work_dir")
    disk = done["df"]
    if disk.ok and len(disk.output.splitlines()) >= 2:
        free_gib = int(disk.output.splitlines()[-1].split()[3]) / 2**20
        facts["work_dir_free_gib"] = f"{free_gib:.1f}"
        if free_gib < MIN_FREE_DISK_GIB:
            warnings.append(f"{host.name}: only {free_gib:.1f} GiB free in {host.work_dir}")
    if "devices" in done and not done["devices"].ok:
        missing = [d for d in devices if d not in done["devices"].output.split()]
        raise HostUnreachable(f"device(s) {', '.join(missing)} (vendor {plan.vendor.name}) missing on "
                              f"{host.name}", file=source, field=f"{field}.devices")
    if "data" in done and not done["data"].ok:
        raise UserError(f"data directory {host.data_dir} does not exist on {host.name}",
                        file=source, field=f"{field}.data_dir")
    if done["leftovers"].ok and CONTAINER_ID_RE.search(done["leftovers"].output):
        raise UserError(f"a container named {node.container_name} already exists on {host.name}", field=field)
    port = done.get("port")
    if port is not None and port.exit_code == 1 and "Address already in use" in port.output:
        raise MasterPortBusy(f"master port {plan.master_port} is already in use on {host.name}",
                        file=source, field="cluster.master_port")
    return facts, warnings
