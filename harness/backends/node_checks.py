"""The checks of one node's host before a run, whatever runs there: commands run,
the run folder can be made, disk, clock, devices, data, the rendezvous port free
on node 0; plus the payload's own (docker answers, the Python has torch), all in
one round trip. The payload judges its own checks' answers. Each answer is read
between markers the check prints (harness/backends/marked.py), so a login
shell's banner is never taken for the clock, a version or the free disk."""

from __future__ import annotations

import time

from harness.backends.marked import UnmarkedAnswer, run_marked, run_marked_batch
from harness.backends.transport import CommandResult, Transport
from harness.core.plan import NodePlan, RunPlan
from harness.errors import HostUnreachable, UserError
from harness.parallel import run_all

QUICK_S = 30.0
MAX_CLOCK_SKEW_S = 2.0
MIN_FREE_DISK_GIB = 5.0


class MasterPortBusy(UserError):
    """The rendezvous port is taken on the first host (a run or a process still holds it)."""


def check_node(transport: Transport, plan: RunPlan, node: NodePlan,
               payload_checks: dict[str, list[str]]) -> tuple[dict[str, str], list[str], dict[str, CommandResult]]:
    """(facts, warnings, the payload checks' answers) of the node's host; a UserError
    names what makes it unusable."""
    source = plan.inventory_source
    host = node.host
    field = f"hosts.{host.name}"
    # The checks are independent: one round trip for all of them. The clock's
    # skew is judged against the round trip's middle (seconds of slack, not ms).
    checks: dict[str, list[str]] = {
        "date": ["date", "+%s.%N"],
        "mkdir": ["mkdir", "-p", "--", f"{node.host_run_dir}/logs"],
        # made first: the run folder's mkdir beside it may not have made it yet
        "df": ["sh", "-c", 'mkdir -p -- "$1" && df -Pk -- "$1"', "sh", host.work_dir],
        **payload_checks,
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
            raise HostUnreachable(f"cannot run commands on {host.name}: {exc}", file=source, field=field,
                                  host=host.name) from exc

    before = time.time()
    answers = run_marked_batch(transport, list(checks.values()), timeout=QUICK_S)
    after = time.time()
    # what the batch left unanswered (timed out behind a slow check) runs alone, side by side
    missing = [key for key, answer in zip(checks, answers) if answer is None]
    done = {key: answer for key, answer in zip(checks, answers) if answer is not None}
    done.update(zip(missing, run_all(run, [checks[key] for key in missing])))
    clock = done["date"]
    if not clock.ok:
        raise HostUnreachable(f"cannot run commands on {host.name}: {clock.output.strip()}",
                              file=source, field=field, host=host.name)

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
    if not done["mkdir"].ok:
        raise HostUnreachable(f"cannot create {node.host_run_dir} on {host.name}: {done['mkdir'].output.strip()}",
                              file=source, field=f"{field}.work_dir", host=host.name, code="BENCH-H03")
    disk = done["df"]
    if disk.ok and len(disk.output.splitlines()) >= 2:
        free_gib = int(disk.output.splitlines()[-1].split()[3]) / 2**20
        facts["work_dir_free_gib"] = f"{free_gib:.1f}"
        if free_gib < MIN_FREE_DISK_GIB:
            warnings.append(f"{host.name}: only {free_gib:.1f} GiB free in {host.work_dir}")
    if "devices" in done and not done["devices"].ok:
        missing = [d for d in devices if d not in done["devices"].output.split()]
        raise HostUnreachable(f"device(s) {', '.join(missing)} (vendor {plan.vendor.name}) missing on "
                              f"{host.name}", file=source, field=f"{field}.devices", host=host.name,
                              code="BENCH-G01")
    if "data" in done and not done["data"].ok:
        raise UserError(f"data directory {host.data_dir} does not exist on {host.name}",
                        file=source, field=f"{field}.data_dir")
    port = done.get("port")
    if port is not None and port.exit_code == 1 and "Address already in use" in port.output:
        raise MasterPortBusy(f"master port {plan.master_port} is already in use on {host.name}",
                        file=source, field="cluster.master_port")
    return facts, warnings, {name: done[name] for name in payload_checks}
