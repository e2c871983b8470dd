"""Health gates before each job of a campaign. A failing gate names the host and
the fact, with the host's fault code (harness/faults/codes.py: leftover container
H04, device count G01, foreign process G02, ECC G03, XID G04/G05, the smi tool
failed G06, unreachable H01); the campaign records the attempt as `infra`, counts
the faults towards quarantine and moves on (retried like any infra failure).

- no leftover `bench.*` container on the job's hosts (backend.leftovers);
- the device count the vendor's smi tool (harness/devices/registry.py) reports
  equals the inventory's `devices` for each host (skipped for a vendor without
  a tool, such as cpu);
- no foreign process on the devices: any process the tool lists before the job
  starts fails the gate, named with host, pid, process name and memory
  (nvidia-smi --query-compute-apps; the process tables of ixsmi and xpu_smi);
- no new device errors since the last job: ECC counters and the driver's error
  lines in the kernel log (NVIDIA's XID events), where the tool reports them.

The last three ask what the tool's registry entry (HealthQueries) says it can
answer; a question it cannot answer (ECC and XID for ixsmi and xpu_smi) is
skipped for it, and said once per controller run. They run under the suite's
`gates.devices` switch, with the device count.

"Since the last job", as decided here:
- Each host's last reading is kept in the campaign's state (state.json `health`,
  saved with every transition, kept across --resume): ECC counters per device,
  the kernel's boot id, how many XID lines that boot's log had and the newest
  one's stamp. Every check replaces it, failing or not: an increase fails one
  check (that attempt is recorded `infra` with the fact) and a retry then runs
  unless the count rises again.
- ECC: only uncorrected errors fail; corrected ones are recorded (the hardware
  fixed them). An uncorrected counter, volatile or aggregate, above its last
  reading fails, naming the device and both values. A volatile counter below its
  last reading means the driver was reloaded or the host rebooted: a new
  baseline. At a host's first check (nothing remembered: a new campaign, or a
  host new to it) the reading is the baseline and fails only where the volatile
  uncorrected count is already non-zero: an uncorrectable error since the driver
  was loaded that no reset cleared (nvidia-smi's "Volatile Uncorr. ECC"). The
  lifetime (aggregate) count at a first check is history and does not fail.
- XID: nvidia-smi has no query for XID events; the driver writes them to the
  kernel log, which the gate reads with `dmesg` (devices/kernel_log.py). A line
  stamped after the last check in the same boot, or any line in a new boot,
  fails. At the first check the lines already there are the baseline: said
  once as a warning, not failed on (the log cannot tell whether someone dealt
  with them). Where the log cannot be read (not root, kernel.dmesg_restrict=1)
  or the ECC query fails, that part is skipped for the host, said once, and the
  previous reading is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.backends.transport import Transport
from harness.campaign.state import HostHealth
from harness.campaign.suite import Gates
from harness.core.backend import ClusterBackend
from harness.core.inventory import Host
from harness.devices.kernel_log import BOOT_ID_ARGV, DMESG_ARGV, newer_than, parse_kernel_events
from harness.devices.readings import UNCORRECTED_AGGREGATE, UNCORRECTED_VOLATILE
from harness.devices.registry import ErrorQuery, HealthQueries, ProcessQuery, health_queries, inventory_commands
from harness.errors import HarnessError
from harness.faults.codes import Fault, xid_code
from harness.parallel import run_all

SMI_TIMEOUT_S = 60.0
_COUNTER_WORDS = {UNCORRECTED_VOLATILE: "since the driver was loaded", UNCORRECTED_AGGREGATE: "lifetime"}


def _ignore(message: str) -> None:
    pass


@dataclass
class GateMemory:
    """What the gates keep from one check to the next: each host's last reading
    (the campaign state's `health`, saved with it) and the notices already given."""

    health: dict[str, HostHealth] = field(default_factory=dict)
    warn: Callable[[str], None] = _ignore
    told: set[str] = field(default_factory=set)

    def once(self, message: str) -> None:
        if message not in self.told:
            self.told.add(message)
            self.warn(message)


@dataclass(frozen=True)
class GateProblem:
    """One failing gate: its line for the attempt's failure message, and the
    host's fault (None where no one host is to blame)."""

    text: str
    fault: Fault | None = None


def _problem(host: Host, code: str, evidence: str, run_id: str) -> GateProblem:
    """The line `host: evidence`, and the host's fault with that evidence."""
    return GateProblem(f"{host.name}: {evidence}", Fault(host=host.name, code=code, evidence=evidence, run_id=run_id))


def first_line(text: str | None) -> str:
    """The first line of a message (a failure, an error), for a one-line report."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _ask(transport: Transport, host: Host, argv: tuple[str, ...], what: str,
         run_id: str = "") -> tuple[str | None, GateProblem | None]:
    """(the output, None), or (None, the problem) when the command could not answer."""
    try:
        result = transport.run(list(argv), timeout=SMI_TIMEOUT_S)
    except HarnessError as exc:
        return None, _problem(host, "BENCH-H01", f"unreachable while {what} ({argv[0]}): {first_line(str(exc))}",
                              run_id)
    if not result.ok:
        how = "timed out" if result.exit_code is None else f"exited {result.exit_code}"
        return None, _problem(host, "BENCH-G06", f"`{argv[0]}` {how} while {what}: {result.output.strip()[-200:]}",
                              run_id)
    return result.output, None


def _device_count(transport: Transport, host: Host, smi: str, run_id: str = "") -> tuple[GateProblem | None, bool]:
    """(the problem or None, whether the tool answered)."""
    argv, parse = inventory_commands(smi)[0]
    output, problem = _ask(transport, host, argv, "counting the devices", run_id)
    if output is None:
        return problem, False
    count = len(parse(output).models)
    if count != host.devices:
        return _problem(host, "BENCH-G01", f"{argv[0]} sees {count} device(s), the inventory says devices: "
                                           f"{host.devices}", run_id), True
    return None, True


def device_problem(transport: Transport, host: Host, smi: str) -> str | None:
    """What is wrong with the host's devices as the smi tool sees them, or None."""
    problem = _device_count(transport, host, smi)[0]
    return problem.text if problem else None


def process_problems(transport: Transport, host: Host, query: ProcessQuery, run_id: str = "") -> list[GateProblem]:
    """Every process on the host's devices, one each (empty: none)."""
    argv, parse = query
    output, problem = _ask(transport, host, argv, "listing the processes on the devices", run_id)
    if output is None:
        return [problem or GateProblem(f"{host.name}: no process list")]
    return [_problem(host, "BENCH-G02", f"foreign process on the devices: {process.describe()}", run_id)
            for process in parse(output)]


def _ecc_problems(transport: Transport, host: Host, query: ErrorQuery, previous: HostHealth | None,
                  now: HostHealth, memory: GateMemory, run_id: str) -> list[GateProblem]:
    argv, parse = query
    output, problem = _ask(transport, host, argv, "reading the ECC counters")
    if output is None:
        memory.once(f"{problem.text if problem else host.name}; the ECC check is skipped there")
        now.errors = dict(previous.errors) if previous else {}
        return []
    devices = parse(output)
    if devices and not any(device.counts for device in devices):
        memory.once(f"{host.name}: {argv[0]} reports no ECC counters (ECC off or not supported); "
                    "the ECC check has nothing to compare there")
    problems: list[GateProblem] = []
    since = f" since the last check ({previous.checked_at})" if previous else ""
    for device in devices:
        key = str(device.index)
        before = previous.errors.get(key, {}) if previous else {}
        found: list[str] = []
        for counter, words in _COUNTER_WORDS.items():
            value, old = device.counts.get(counter), before.get(counter)
            if value is None:
                continue
            if old is None and counter == UNCORRECTED_VOLATILE and value > 0:
                found.append(f"{value} uncorrected ECC error(s) {words}, not cleared by a reset")
            elif old is not None and value > old:
                found.append(f"uncorrected ECC errors ({words}) {old} -> {value}{since}")
        if found:
            problems.append(_problem(host, "BENCH-G03", f"device {key}: " + "; ".join(found), run_id))
        now.errors[key] = dict(device.counts)
    return problems


def _kernel_log_problems(transport: Transport, host: Host, marker: re.Pattern[str], previous: HostHealth | None,
                         now: HostHealth, memory: GateMemory, run_id: str) -> list[GateProblem]:
    boot, problem = _ask(transport, host, BOOT_ID_ARGV, "reading the boot id")
    log, problem = (None, problem) if boot is None else _ask(transport, host, DMESG_ARGV, "reading the kernel log")
    if boot is None or log is None:
        memory.once(f"{problem.text if problem else host.name}; the XID check is skipped there")
        if previous is not None:
            now.boot_id, now.kernel_events, now.last_event_s = (previous.boot_id, previous.kernel_events,
                                                                previous.last_event_s)
        return []
    events = parse_kernel_events(log, marker)
    now.boot_id, now.kernel_events = boot.strip(), len(events)
    now.last_event_s = events[-1].at_s if events else None
    if previous is None or previous.boot_id is None:
        if events:
            memory.once(f"{host.name}: {len(events)} driver error line(s) (XID) in the kernel log before this "
                        f"campaign's first check there, the last: {events[-1].text[:200]}; not failed on")
        return []
    rebooted = now.boot_id != previous.boot_id
    new = events if rebooted else newer_than(events, previous.last_event_s, previous.kernel_events)
    if not new:
        return []
    when = "since the host rebooted" if rebooted else f"since the last check ({previous.checked_at})"
    # One fault for the lines: G04 when any of them needs a reset, else G05.
    code = "BENCH-G04" if any(xid_code(event.text) == "BENCH-G04" for event in new) else "BENCH-G05"
    return [_problem(host, code, f"{len(new)} new driver error line(s) (XID) in the kernel log {when}, "
                                 f"the last: {new[-1].text[:200]}", run_id)]


def error_problems(transport: Transport, host: Host, queries: HealthQueries, memory: GateMemory,
                   run_id: str = "") -> list[GateProblem]:
    """New ECC and XID errors on the host since its last check; its reading replaces the remembered one."""
    if queries.errors is None and queries.kernel_marker is None:
        return []
    previous = memory.health.get(host.name)
    now = HostHealth()
    problems: list[GateProblem] = []
    if queries.errors is not None:
        problems += _ecc_problems(transport, host, queries.errors, previous, now, memory, run_id)
    if queries.kernel_marker is not None:
        problems += _kernel_log_problems(transport, host, queries.kernel_marker, previous, now, memory, run_id)
    memory.health[host.name] = now
    return problems


def _say_what_is_skipped(smi: str, queries: HealthQueries, memory: GateMemory) -> None:
    missing = [what for what, asked in (("foreign processes", queries.processes), ("ECC errors", queries.errors),
                                        ("driver errors (XID)", queries.kernel_marker)) if asked is None]
    if missing:
        memory.once(f"health gates: {smi} cannot report {', '.join(missing)}; that gate is skipped for jobs "
                    f"whose vendor's tool is {smi}")


def check_gates(backend: ClusterBackend, transport_for: Callable[[Host], Transport], hosts: list[Host],
                smi: str | None, gates: Gates, memory: GateMemory | None = None,
                run_id: str = "") -> list[GateProblem]:
    """Every failing gate of these hosts, one each (empty: all pass), with the
    host's fault code (run_id: the attempt they were seen before).
    ``memory`` carries the hosts' last readings from check to check (a fresh
    one: every check is a first check)."""
    memory = memory if memory is not None else GateMemory()
    problems: list[GateProblem] = []
    if gates.leftovers:
        try:
            leftovers = backend.leftovers(hosts)
        except HarnessError as exc:
            problems.append(GateProblem(f"cannot list the containers on {', '.join(h.name for h in hosts)}: {exc}"))
        else:
            problems += [GateProblem(f"{c.host}: leftover container {c.describe()}",
                                     Fault(host=c.host, code="BENCH-H04", evidence=f"leftover container {c.describe()}",
                                           run_id=run_id)) for c in leftovers]
    if gates.devices and smi:
        queries = health_queries(smi)
        _say_what_is_skipped(smi, queries, memory)

        def one(host: Host) -> list[GateProblem]:
            try:
                transport = transport_for(host)
            except HarnessError as exc:
                return [_problem(host, "BENCH-H01", f"unreachable: {first_line(str(exc))}", run_id)]
            problem, answered = _device_count(transport, host, smi, run_id)
            found = [problem] if problem else []
            if not answered:  # the tool itself failed: asking it more says nothing new
                return found
            if queries.processes is not None:
                found += process_problems(transport, host, queries.processes, run_id)
            return found + error_problems(transport, host, queries, memory, run_id)

        for found in run_all(one, hosts):
            problems += found
    return problems
