"""Controller phases against the number of hosts (issue 11, item 5).

Starts N throw-away sshd test hosts (tests/spare_sshd.py's SpareSshd) on the
loopback addresses 127.0.2.1 .. 127.0.2.N (all of 127/8 is routed to `lo` on
Linux), all sharing this machine's one Docker engine, writes an inventory of N
hosts with one device each and runs the allreduce case (one process per host,
a sweep of a few tiny sizes) through `python -m harness bench` for every N of
--hosts-list. Prints each controller phase (results.json phase_seconds)
against N, and beside the wall times:

  ctl CPU   the controller process's own CPU seconds (user + system, from
            /proc/<pid>/stat when it prints a phase's end line, and
            getrusage of the child for the total);
  machine   the CPU seconds the whole machine was busy meanwhile (/proc/stat):
            controller, sshds, docker CLIs, dockerd, containers. This machine's
            few cores are shared by all of them, so a phase whose machine CPU
            is near (cores x wall) was waiting for cores, not for the controller.

On a real cluster the hosts' share runs elsewhere; what stays is the
controller's own CPU (mostly under one GIL) plus network round trips.
Targets (reported, not asserted): every phase but wait at the largest N
<= 2x its time at the smallest N; controller overhead (all phases but wait)
at 32 hosts <= 10 s. Needs the test infrastructure:

    bash tests/infra/setup.sh
    flock /tmp/bench-e2e.lock .venv/bin/python bench/scale.py --hosts-list 2,4,8,16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import WORK_ROOT, TestInfra, local_infra, write_hosts_yaml  # noqa: E402
from spare_sshd import LOCK_DIR, SPARE_PORT, SpareSshd, _children, try_claim  # noqa: E402

SUBNET = "127.0.2."  # 127.0.2.1 .. 127.0.2.254: clear of the test hosts (127.0.0.2-9)
SWEEP = "max_bytes=1024,min_bytes=8,step_factor=4,warmup_iters=1,iters=2"
FALLBACK_CASE = ("resnet50", "bs=2,image_size=32,num_classes=10,max_steps=2")
PHASES = ("preflight", "allocate", "environment", "image", "launch", "wait", "collect", "parse")
PHASE_LINE = re.compile(r"^([a-z][a-z_-]*)\s+(-?\d+\.\d+) s$")
TICK = os.sysconf("SC_CLK_TCK")
RATIO_TARGET = 2.0
OVERHEAD_TARGET_S = 10.0


# -- hosts ---------------------------------------------------------------------------------
def claim_addresses(count: int) -> list[tuple[str, IO[str]]]:
    """`count` addresses under SUBNET, each held by a flock in spare_sshd's lock
    folder (as SpareSshd expects), none with a listener on the sshd port."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    claimed: list[tuple[str, IO[str]]] = []
    for last in range(1, 255):
        address = f"{SUBNET}{last}"
        lock = try_claim(address, probe_s=0.2)
        if lock is None:
            continue
        claimed.append((address, lock))
        if len(claimed) == count:
            return claimed
    for _, lock in claimed:
        lock.close()
    raise SystemExit(f"only {len(claimed)} of {count} free addresses under {SUBNET}0/24")


def start_hosts(count: int, folder: Path, infra: TestInfra) -> list[SpareSshd]:
    public_key = Path(f"{infra.client_key}.pub")
    hosts: list[SpareSshd] = []
    try:
        for index, claim in enumerate(claim_addresses(count)):
            hosts.append(SpareSshd(folder / f"sshd-{index:02d}", public_key, claim))
            hosts[-1].start()
    except BaseException:
        stop_hosts(hosts)
        raise
    return hosts


def stop_hosts(hosts: list[SpareSshd]) -> None:
    for host in hosts:
        host.close()


def inventory(folder: Path, infra: TestInfra, hosts: list[SpareSshd], work_base: Path) -> Path:
    """hosts.yaml of these hosts (one device each) and a known_hosts with all their keys."""
    known = folder / f"known_hosts-{len(hosts)}"
    lines = infra.known_hosts.read_text(encoding="utf-8").splitlines()
    known.write_text("\n".join([*lines, *(h.known_hosts_line for h in hosts)]) + "\n", encoding="utf-8")
    entries = [h.inventory_entry(f"h{i:02d}") for i, h in enumerate(hosts)]
    return write_hosts_yaml(folder, infra, hosts=[], extra_hosts=entries, devices=1, work_base=work_base,
                            cluster_overrides={"known_hosts": str(known)}, filename=f"hosts-{len(hosts)}.yaml")


def containers_of(run_id: str) -> list[str]:
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bench.run_id={run_id}"],
                            capture_output=True, text=True, timeout=60, check=False)
    return listed.stdout.split()


def wait_for_quiet_engine(limit_s: float) -> float:
    """Wait until no harness container (of any run) is on the engine: the hosts share
    it, so another run's would be refused as an orphan and would load the cores.
    Returns the seconds waited."""
    start = time.monotonic()
    announced = False
    while True:
        listed = subprocess.run(["docker", "ps", "-aq", "--filter", "label=bench.run_id"],
                                capture_output=True, text=True, timeout=60, check=False)
        if not listed.stdout.split():
            return time.monotonic() - start
        if time.monotonic() - start > limit_s:
            raise SystemExit(f"containers of other runs stayed on the engine for {limit_s:.0f} s: "
                             f"{' '.join(listed.stdout.split())}")
        if not announced:
            print("waiting for other runs' containers to leave the shared engine ...", flush=True)
            announced = True
        time.sleep(2)


# -- CPU accounting ------------------------------------------------------------------------
def process_cpu_s(pid: int) -> float | None:
    """utime + stime + cutime + cstime of a live process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is the state (the stat's third field)
    return sum(int(v) for v in fields[11:15]) / TICK


def hosts_cpu_s(listeners: list[int]) -> float:
    """CPU seconds of the test hosts' side: every sshd listener and all below it
    (sessions, shells, docker CLIs), live ones with what they reaped, dead ones
    through their parent's reaped-children time."""
    tree = _children()
    total = 0.0
    pending = list(listeners)
    while pending:
        pid = pending.pop()
        total += process_cpu_s(pid) or 0.0
        pending.extend(tree.get(pid, []))
    return total


def machine_busy_s() -> float:
    """CPU seconds all cores have been busy since boot (everything but idle and iowait)."""
    with open("/proc/stat", encoding="utf-8") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


@dataclass
class Run:
    nnodes: int
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # results.json phase_seconds
    ctl_cpu: dict[str, float] = field(default_factory=dict)  # the controller's CPU s up to each phase's end
    busy: dict[str, float] = field(default_factory=dict)  # the machine's busy CPU s, likewise
    hosts_cpu: dict[str, float] = field(default_factory=dict)  # the sshds' (and their commands') CPU s, likewise
    ctl_cpu_total: float = 0.0
    busy_total: float = 0.0
    hosts_cpu_total: float = 0.0
    e2e_s: float = 0.0
    load_before: float = 0.0  # the 1-minute load average when it started (other users of the cores)
    problems: list[str] = field(default_factory=list)

    @property
    def overhead_s(self) -> float:
        return sum(v for k, v in self.phases.items() if k != "wait")


def run_bench(hosts_yaml: Path, results: Path, run_id: str, nnodes: int, case: str, fix_hp: str,
              timeout_s: float, listeners: list[int]) -> Run:
    """One `python -m harness bench`, its phase lines read as they come: at each
    one the controller's CPU and the machine's busy time are sampled."""
    argv = [sys.executable, "-m", "harness", "bench", "--case", case, "--vendor", "cpu", "--config", f"{nnodes}x1",
            "--hosts", str(hosts_yaml), "--results", str(results), "--run-id", run_id, "--fix-hp", fix_hp,
            "--timeout", str(int(timeout_s))]
    run = Run(nnodes)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_start, hosts_start = machine_busy_s(), hosts_cpu_s(listeners)
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout: list[str] = []
    drain = threading.Thread(target=lambda: stdout.extend(proc.stdout or []), daemon=True)
    drain.start()
    killer = threading.Timer(timeout_s + 300, proc.kill)  # the harness's own --timeout failed to end it
    killer.start()
    stderr: list[str] = []
    last_cpu, last_busy, last_hosts = 0.0, busy_start, hosts_start
    assert proc.stderr is not None
    for line in proc.stderr:
        stderr.append(line)
        text = line.strip()
        name = "startup" if text.startswith(f"run {run_id}:") else None
        match = PHASE_LINE.match(text)
        if match:
            name = match.group(1)
        if name is None:
            continue
        cpu, busy, on_hosts = process_cpu_s(proc.pid), machine_busy_s(), hosts_cpu_s(listeners)
        if cpu is not None:
            run.ctl_cpu[name] = run.ctl_cpu.get(name, 0.0) + cpu - last_cpu
            last_cpu = cpu
        run.busy[name] = run.busy.get(name, 0.0) + busy - last_busy
        run.hosts_cpu[name] = run.hosts_cpu.get(name, 0.0) + on_hosts - last_hosts
        last_busy, last_hosts = busy, on_hosts
    proc.wait()
    if not killer.is_alive():
        run.problems.append("the controller did not end: killed")
    killer.cancel()
    drain.join(timeout=30)
    run.wall_s = time.monotonic() - start
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.ctl_cpu_total = (children_after.ru_utime - children_before.ru_utime
                         + children_after.ru_stime - children_before.ru_stime)
    busy, on_hosts = machine_busy_s(), hosts_cpu_s(listeners)
    run.busy_total, run.hosts_cpu_total = busy - busy_start, on_hosts - hosts_start
    run.ctl_cpu["record"] = run.ctl_cpu_total - last_cpu  # results.json, README, report.html, history, exit
    run.busy["record"], run.hosts_cpu["record"] = busy - last_busy, on_hosts - last_hosts

    out = results / run_id / case / f"{nnodes}x1"
    if proc.returncode != 0:
        run.problems.append(f"exit {proc.returncode}: {''.join(stderr)[-1000:]}")
    try:
        result = json.loads((out / "results.json").read_text())
    except (OSError, ValueError) as exc:
        run.problems.append(f"no results.json: {exc}")
        return run
    run.phases = {k: float(v) for k, v in result["phase_seconds"].items()}
    metrics = result.get("metrics") or {}
    run.e2e_s = float(metrics.get("e2e_time") or 0.0)
    if result["status"] != "success":
        run.problems.append(f"status {result['status']} ({result.get('failure_kind')}): {result.get('failure')}")
    if metrics.get("world_size") != nnodes:
        run.problems.append(f"world size {metrics.get('world_size')}, not {nnodes}")
    uncollected = [n["host"] for n in result["nodes"] if not n["collected"]]
    if uncollected or len(result["nodes"]) != nnodes:
        run.problems.append(f"{len(result['nodes'])} node outcomes, not collected: {uncollected}")
    left = containers_of(run_id)
    if left:
        run.problems.append(f"containers left: {left}")
        subprocess.run(["docker", "rm", "--force", *left], capture_output=True, timeout=120, check=False)
    return run


def real_cluster_estimate(run: Run, phase: str, cores: int) -> float:
    """A conservative guess at the phase's wall time had every host its own machine:
    of the CPU not the controller's (hosts' commands, engine, containers), all but
    one host's share would run elsewhere; the wall shrinks only by what of it did
    not fit into the cores' idle time meanwhile (a phase that waited on round trips,
    not on cores, keeps its time). Never below the controller's own CPU."""
    wall = run.phases.get(phase, 0.0)
    busy = run.busy.get(phase, 0.0)
    ctl = run.ctl_cpu.get(phase, 0.0)
    moved = max(0.0, busy - ctl) * (1 - 1 / run.nnodes)
    idle = max(0.0, cores * wall - busy)
    return max(ctl, wall - max(0.0, moved - idle) / cores)


# -- report --------------------------------------------------------------------------------
def phase_names(runs: list[Run]) -> list[str]:
    seen = [p for p in PHASES if any(p in r.phases for r in runs)]
    return seen + sorted({p for r in runs for p in r.phases} - set(seen))


def table(title: str, headers: list[str], rows: list[tuple[int, list[str]]]) -> None:
    print(f"\n{title}")
    widths = [max(3, *(len(str(n)) for n, _ in rows))]
    widths += [max(len(h), *(len(cols[i]) for _, cols in rows)) for i, h in enumerate(headers)]
    print("  " + "  ".join(h.rjust(w) for h, w in zip(["N", *headers], widths)))
    for nnodes, cols in rows:
        print("  " + "  ".join(c.rjust(w) for c, w in zip([str(nnodes), *cols], widths)))


def report(runs: list[Run], cores: int, case: str) -> None:
    ok = [r for r in runs if r.phases]
    names = phase_names(ok)
    print(f"\nthis machine has {cores} core(s), shared by the controller, {max(r.nnodes for r in runs)} sshds "
          "(their sessions and docker CLIs), dockerd and every container of the run")
    print(f"case {case}, one process per host; wall seconds per phase (results.json phase_seconds); "
          "environment runs beside image and shows only what image did not hide")
    rows = [(r.nnodes, [f"{r.phases.get(p, 0.0):.2f}" for p in names]
             + [f"{r.overhead_s:.2f}", f"{r.ctl_cpu_total:.2f}", f"{r.hosts_cpu_total:.1f}", f"{r.busy_total:.1f}",
                f"{r.e2e_s:.2f}", f"{r.wall_s:.2f}", f"{r.load_before:.1f}"]) for r in ok]
    table("wall seconds per phase; overhead = all phases but wait; CPU seconds of the whole run: ctl = the "
          "controller, hosts = sshds + sessions + docker CLIs, machine = all busy cores; load = 1-min load average "
          "before the run (others' work on the same cores)",
          [*names, "overhead", "ctl CPU", "hosts CPU", "machine CPU", "e2e", "wall", "load"], rows)
    cpu_names = ["startup", *names, "record"]
    rows = [(r.nnodes, [f"{r.ctl_cpu.get(p, 0.0):.2f}" for p in cpu_names]) for r in ok]
    table("controller CPU seconds, by the phase that ended (startup: imports, inventory, plan; record: results "
          "files, history; image includes the environment capture beside it)", cpu_names, rows)
    rows = [(r.nnodes, [f"{r.hosts_cpu.get(p, 0.0):.1f}" for p in cpu_names]) for r in ok]
    table("test hosts' CPU seconds (sshds, their sessions and the docker CLIs they run), likewise", cpu_names, rows)
    rows = [(r.nnodes, [f"{r.busy.get(p, 0.0):.1f}" for p in cpu_names]) for r in ok]
    table(f"machine busy CPU seconds, likewise (at most {cores} x wall): the above + dockerd, containerd, "
          "the containers, this script", cpu_names, rows)
    rows = [(r.nnodes, [f"{r.busy[p] / (cores * r.phases[p]) * 100:.0f}%" if r.phases.get(p, 0) > 0.05 else "-"
                        for p in names]) for r in ok]
    table(f"how busy the {cores} cores were during each phase (100% = every core busy all the phase)", names, rows)

    overheads = [p for p in names if p != "wait"]
    rows = [(r.nnodes, [f"{real_cluster_estimate(r, p, cores):.2f}" for p in overheads]
             + [f"{sum(real_cluster_estimate(r, p, cores) for p in overheads):.2f}"]) for r in ok]
    table("estimated wall seconds on a real cluster (each host's commands on its own machine; see "
          "real_cluster_estimate: conservative, a guess, not a measurement)", [*overheads, "overhead"], rows)

    for run in runs:
        for problem in run.problems:
            text = " ".join(problem.split())
            print(f"N={run.nnodes}: PROBLEM {text[:400]}{' ...' if len(text) > 400 else ''}")
    if len(ok) < 2:
        return
    small, large = ok[0], ok[-1]
    print(f"\ntargets (the issue's are for 2 -> 32 hosts; measured {small.nnodes} -> {large.nnodes}):")
    for phase in names:
        if phase in ("wait", "allocate", "parse"):
            continue
        before, after = small.phases.get(phase, 0.0), large.phases.get(phase, 0.0)
        ratio = after / before if before > 0.05 else float("nan")
        verdict = "within" if after <= max(RATIO_TARGET * before, 0.1) else "OVER"
        est_before, est_after = real_cluster_estimate(small, phase, cores), real_cluster_estimate(large, phase, cores)
        est_verdict = "within" if est_after <= max(RATIO_TARGET * est_before, 0.1) else "OVER"
        print(f"  {phase:<12} {before:6.2f} s -> {after:6.2f} s  x{ratio:4.1f}  {verdict} the x{RATIO_TARGET:.0f} target;"
              f"  estimated on a real cluster {est_before:.2f} -> {est_after:.2f} s: {est_verdict}")
    verdict = "within" if large.overhead_s <= OVERHEAD_TARGET_S else "OVER"
    own = sum(v for k, v in large.ctl_cpu.items() if k in overheads)
    print(f"  overhead     {small.overhead_s:6.2f} s -> {large.overhead_s:6.2f} s  at {large.nnodes} hosts: "
          f"{verdict} the {OVERHEAD_TARGET_S:.0f} s target (the controller's own CPU in those phases: {own:.2f} s)")
    estimate = sum(real_cluster_estimate(large, p, cores) for p in overheads)
    print(f"  estimated on a real cluster at {large.nnodes} hosts: {estimate:.2f} s "
          f"({'within' if estimate <= OVERHEAD_TARGET_S else 'OVER'} the {OVERHEAD_TARGET_S:.0f} s target)")


# -- main ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts-list", default="2,8,16,32", help="comma-separated host counts (default 2,8,16,32)")
    parser.add_argument("--case", default="allreduce", choices=["allreduce", "resnet50"],
                        help="allreduce (tiny sweep) or resnet50 (2 tiny steps), one process per host")
    parser.add_argument("--fix-hp", default=None, help="override the case's tiny settings")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the first run at the smallest N "
                        "that builds the image if needed (not in the table)")
    parser.add_argument("--quiet-wait", type=float, default=900,
                        help="seconds to wait for other runs' containers to leave the engine (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the results and work folders")
    args = parser.parse_args()
    counts = sorted({int(v) for v in args.hosts_list.split(",") if v.strip()})
    if not counts or counts[0] < 1 or counts[-1] > 254:
        raise SystemExit("--hosts-list: counts between 1 and 254")
    fix_hp = args.fix_hp or (SWEEP if args.case == "allreduce" else FALLBACK_CASE[1])
    infra = local_infra()
    cores = os.cpu_count() or 1
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work_base = WORK_ROOT / f"scale-{uuid.uuid4().hex[:8]}"
    runs: list[Run] = []
    hosts: list[SpareSshd] = []
    try:
        started = time.monotonic()
        hosts = start_hosts(counts[-1], folder, infra)
        print(f"{len(hosts)} sshd test hosts up on {hosts[0].address} .. {hosts[-1].address}:{SPARE_PORT} "
              f"in {time.monotonic() - started:.1f} s; one Docker engine; {cores} cores", flush=True)
        plan = ([counts[0]] if not args.no_warmup else []) + counts
        for index, nnodes in enumerate(plan):
            warmup = index == 0 and not args.no_warmup
            hosts_yaml = inventory(folder, infra, hosts[:nnodes], work_base / f"n{nnodes}-{index}")
            run_id = f"scale-{nnodes}-{uuid.uuid4().hex[:6]}"
            waited = wait_for_quiet_engine(args.quiet_wait)
            load = os.getloadavg()[0]
            if waited > 0.5 or load > 1.0:
                print(f"  before N={nnodes}: waited {waited:.0f} s for a quiet engine; 1-min load {load:.1f}",
                      flush=True)
            run = run_bench(hosts_yaml, folder / "results", run_id, nnodes, args.case, fix_hp, args.timeout,
                            [h.pid for h in hosts if h.pid is not None])
            run.load_before = load
            overhead = f"{run.overhead_s:.2f}" if run.phases else "-"
            print(f"{'warm-up ' if warmup else ''}N={nnodes}: wall {run.wall_s:.1f} s, phases but wait {overhead} s, "
                  f"controller CPU {run.ctl_cpu_total:.2f} s" + (f", {len(run.problems)} problem(s)" if run.problems
                                                                 else ""), flush=True)
            if warmup:
                if run.problems:
                    raise SystemExit(f"warm-up run failed: {run.problems}")
                continue
            runs.append(run)
    finally:
        stop_hosts(hosts)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(work_base, ignore_errors=True)
        else:
            print(f"kept {folder} and {work_base}")
    report(runs, cores, args.case)


if __name__ == "__main__":
    main()
