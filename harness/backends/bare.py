"""The bare payload: torchrun started directly from a Python environment on each
node, no container and no image (HPC sites without Docker, a machine that has
PyTorch and nothing else).

Each node's run folder ({work_dir}/runs/<run_id>/node<k>) gets:
- code/: the training code (cases/) and node.sh, the node's script (setup lines,
  variables, torchrun); `describe()` prints it for the dry run;
- state/: payload.pid (node.sh, the leader of its own session), exit_code
  (written when torchrun ended) and output.log (torchrun's output);
- logs/: what the ranks write (events, rank logs, stacks), as in a container.
Every process of the run carries BENCH_RUN_ID, BENCH_NODE_RANK and BENCH_HOST in
its environment: torchrun starts its workers in sessions of their own, so the
run's processes are found (stop, orphans, stacks) by those, not by a process group.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import REPO_ROOT
from harness.backends.bare_python import TORCH_PROBE, python_environment, setup_argv
from harness.backends.docker_collect import CONTAINER_FILES, redact_file
from harness.backends.launch import ENV_FILE_NAME, check_hosts, container_env, node_run_dir, train_argv
from harness.backends.node_checks import check_node
from harness.backends.payload import NODE_LOG, NodeCollected, Payload, TransportFor, last_lines
from harness.backends.stream_watch import parse_answer, watch_argv, watch_script
from harness.backends.transport import Transport, remove_tree_argv
from harness.core.backend import Leftover, NodeState
from harness.core.inventory import Host, Inventory, PayloadSpec
from harness.core.job import Job
from harness.core.plan import BackendRequest, NodePlan, RunPlan, secret_line, train_line
from harness.core.vendor import VendorSpec
from harness.errors import HarnessError, RunFailed, UserError
from harness.hostinfo.model import EnvironmentInfo
from harness.hostinfo.probes import capture_environment
from harness.parallel import run_all
from harness.secrets import env_file_text, remove_file_argv, write_private_file_argv

QUICK_S = 30.0
STOP_GRACE_S = 10
START_WAIT_S = 10
STATE_DIR = "state"
CODE_DIR = "code"
PID_FILE = "payload.pid"
EXIT_FILE = "exit_code"
OUTPUT_FILE = "output.log"
RUN_ENV_KEYS = ("BENCH_RUN_ID", "BENCH_NODE_RANK", "BENCH_HOST")

# The environ of every process: "<pid> KEY=value" for each BENCH_* variable. One grep
# over /proc, whatever the number of processes; a process that ended meanwhile is skipped.
_LIST_PROCESSES = r"""
grep -a -z -s -H -o '^BENCH_\(RUN_ID\|NODE_RANK\|HOST\)=.*' /proc/[0-9]*/environ 2>/dev/null |
  tr '\0' '\n' | sed -n 's|^/proc/\([0-9]*\)/environ:|@proc \1 |p'
exit 0
"""

# Shell functions over one node's processes: $1 run id, $2 node rank, $3 host.
_RUN_PIDS = r"""
run_pids() {
  for e in $(grep -l -a -z -s -x "BENCH_RUN_ID=$1" /proc/[0-9]*/environ 2>/dev/null); do
    grep -q -a -z -x "BENCH_NODE_RANK=$2" "$e" 2>/dev/null || continue
    grep -q -a -z -x "BENCH_HOST=$3" "$e" 2>/dev/null || continue
    p=${e#/proc/}; echo "${p%/environ}"
  done
}
"""

# $1 run id, $2 node rank, $3 host: SIGCONT to every process of the node; prints "frozen" when
# one of them stood stopped (state T: SIGSTOP; t: a tracer's stop). The state follows the
# command name in /proc/<pid>/stat, which may hold spaces and parentheses: cut after the last ")".
_FROZEN_MARK = "frozen"
_THAW = _RUN_PIDS + rf"""
p=$(run_pids "$@")
[ -n "$p" ] || exit 0
for q in $p; do
  case $(sed 's/.*) //' "/proc/$q/stat" 2>/dev/null | cut -c1) in T|t) echo {_FROZEN_MARK}; break;; esac
done
kill -CONT $p 2>/dev/null
exit 0
"""

# $1 run folder, $2 grace seconds, $3 run id, $4 node rank, $5 host: SIGCONT (a paused run
# cannot act on a signal), SIGTERM to node.sh (it forwards it to torchrun, which forwards it
# to its workers), then SIGKILL to every process of the node still there after the grace.
_STOP = _RUN_PIDS + r"""
r=$1 grace=$2; shift 2
pids=$(run_pids "$@")
[ -n "$pids" ] || exit 0
kill -CONT $pids 2>/dev/null
leader=$(cat "$r/state/payload.pid" 2>/dev/null)
if [ -n "$leader" ]; then kill -TERM "$leader" 2>/dev/null; else kill -TERM $pids 2>/dev/null; fi
i=0
while [ "$i" -lt "$((grace * 10))" ]; do
  [ -n "$(run_pids "$@")" ] || exit 0
  sleep 0.1; i=$((i + 1))
done
pids=$(run_pids "$@")
[ -z "$pids" ] || { kill -KILL $pids 2>/dev/null; echo "@killed $pids"; }
exit 0
"""

# $1 run folder. node.sh writes its own pid (it leads a session of its own); wait for it.
_START = r"""
r=$1 wait_s=$2
mkdir -p "$r/state" "$r/logs" && rm -f "$r/state/payload.pid" "$r/state/exit_code" || exit 1
cd "$r/code" || exit 1
setsid sh ./node.sh </dev/null >"$r/state/output.log" 2>&1 &
i=0
while [ ! -s "$r/state/payload.pid" ] && [ "$i" -lt "$((wait_s * 10))" ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$r/state/payload.pid" ] || { echo "node.sh did not start within $wait_s s:"; tail -n 20 "$r/state/output.log"; exit 1; }
"""

# The watch's view of a node (harness/backends/stream_watch.py): $1 the node's run folder.
_WATCH_FUNCTIONS = r"""
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -c1)" != Z ]; }
state() {
  s=$1/state
  if [ -s "$s/exit_code" ]; then printf 'state=exited exit=%s' "$(cat "$s/exit_code")"
  elif [ ! -s "$s/payload.pid" ]; then printf 'state=starting exit=0'
  elif alive "$(cat "$s/payload.pid")"; then printf 'state=running exit=0'
  else printf 'no such process: node.sh (pid %s) ended without an exit status' "$(cat "$s/payload.pid")"; fi
}
await() { p=$(cat "$1/state/payload.pid" 2>/dev/null) && tail --pid="$p" -f /dev/null; }
"""
WATCH_SCRIPT = watch_script(_WATCH_FUNCTIONS)

@dataclass(frozen=True)
class BareNode:
    node: NodePlan
    script: str  # code/node.sh
    start_argv: list[str]
    env_file: str | None  # {run_dir}/secret.env when there are secrets: node.sh reads it and removes it

    @property
    def run_dir(self) -> str:
        return self.node.host_run_dir

    def where(self) -> str:
        host = self.node.host
        return "local" if host.transport == "local" else f"ssh {host.user}@{host.address}:{host.port}"


@dataclass(frozen=True)
class BareRequest(BackendRequest):
    python: str
    nodes: list[BareNode]

    def node(self, node_rank: int) -> BareNode:
        return self.nodes[node_rank]

    def describe(self) -> str:
        lines = [f"payload: bare (no container): torchrun from {self.python} on every node"]
        for entry in self.nodes:
            node = entry.node
            lines += [f"node {node.node_rank}: {node.host.name} ({entry.where()})",
                      f"  code:  cases/ copied to {entry.run_dir}/{CODE_DIR}",
                      f"  start: {shlex.join(entry.start_argv[:2])} ... {shlex.join(entry.start_argv[3:])}",
                      "  node.sh:",
                      *(f"    {line}" for line in entry.script.rstrip("\n").splitlines())]
            lines += secret_line(node.secret_env, "in a 0600 file that node.sh reads and removes")
            lines.append(train_line(node))
        return "\n".join(lines) + "\n"


def request_of(plan: RunPlan) -> BareRequest:
    if not isinstance(plan.request, BareRequest):
        raise TypeError(f"a plan for another payload: {type(plan.request).__name__}")
    return plan.request


def node_script(spec: PayloadSpec, node: NodePlan, env: dict[str, str], run_ids: dict[str, str],
                env_file: str | None) -> str:
    lines = ["# the bare payload's node script (harness/backends/bare.py)",
             f"run={shlex.quote(node.host_run_dir)}",
             f'echo $$ > "$run/{STATE_DIR}/{PID_FILE}.tmp" && mv "$run/{STATE_DIR}/{PID_FILE}.tmp" '
             f'"$run/{STATE_DIR}/{PID_FILE}"']
    if spec.setup.strip():
        lines += ["# cluster.payload.setup", *spec.setup.strip().splitlines()]
    lines.append(f'cd "$run/{CODE_DIR}" || exit 125')
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted({**env, **run_ids}.items())]
    lines.append(f'export PYTHONPATH="$run/{CODE_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"')
    if env_file is not None:
        name = shlex.quote(env_file.rsplit("/", 1)[-1])
        # KEY=value lines as docker's --env-file holds them: read, never run as shell code.
        lines += [f'if [ -f "$run/{name}" ]; then',
                  f"  while IFS='=' read -r key value; do export \"$key=$value\"; done <\"$run/{name}\"",
                  f'  rm -f "$run/{name}"',
                  "fi"]
    lines += [
        f"{shlex.join(node.train_argv)} &",
        "child=$!",
        # torchrun forwards SIGTERM to its workers; the script waits for its exit status.
        "trap 'kill -TERM \"$child\" 2>/dev/null' TERM INT HUP",
        'while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done',
        f'echo "$rc" > "$run/{STATE_DIR}/{EXIT_FILE}.tmp" && mv "$run/{STATE_DIR}/{EXIT_FILE}.tmp" '
        f'"$run/{STATE_DIR}/{EXIT_FILE}"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def bare_plan(job: Job, inventory: Inventory, vendor: VendorSpec, spec: PayloadSpec) -> RunPlan:
    hosts = inventory.select(job.nnodes)
    notes = check_hosts(job, inventory, hosts)
    if inventory.cluster.mounts or vendor.mounts:
        notes.append("mounts are for containers: the bare payload runs on the node's own file system")
    master = hosts[0]
    visible_env, secret_env = container_env(job, inventory, vendor)
    nodes: list[BareNode] = []
    plan_nodes: list[NodePlan] = []
    for rank, host in enumerate(hosts):
        run_dir = node_run_dir(host, job, rank)
        command = train_argv(job, vendor, rank, master.address, inventory.cluster.master_port,
                             with_data=not job.synthetic, python=spec.python, log_dir=f"{run_dir}/logs",
                             data_dir=host.data_dir or "")
        node = NodePlan(host=host, node_rank=rank, container_name=f"bench-{job.run_id}-{job.case}-n{rank}",
                        labels={}, host_run_dir=run_dir, train_argv=command, secret_env=secret_env)
        env_file = f"{run_dir}/{ENV_FILE_NAME}" if secret_env else None
        run_ids = dict(zip(RUN_ENV_KEYS, (job.run_id, str(rank), host.name)))
        nodes.append(BareNode(node=node, script=node_script(spec, node, visible_env, run_ids, env_file),
                              start_argv=["sh", "-c", _START, "bench-start", run_dir, str(START_WAIT_S)],
                              env_file=env_file))
        plan_nodes.append(node)
    return RunPlan(job=job, vendor=vendor, image=None, nodes=plan_nodes, master_addr=master.address,
                   master_port=inventory.cluster.master_port, request=BareRequest(spec.python, nodes),
                   inventory_source=inventory.source, notes=notes)


def parse_processes(output: str) -> dict[str, dict[str, str]]:
    """pid -> its BENCH_* variables, from _LIST_PROCESSES' `@proc <pid> KEY=value` lines."""
    found: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "@proc" and parts[1].isdigit() and "=" in parts[2]:
            key, _, value = parts[2].partition("=")
            found.setdefault(parts[1], {})[key] = value
    return found


class BarePayload(Payload):
    name = "bare"

    def _setup_argv(self, argv: list[str]) -> list[str]:
        return setup_argv(self.spec, argv)

    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        return bare_plan(job, inventory, vendor, self.spec)

    def check(self, transport: Transport, plan: RunPlan, node: NodePlan) -> tuple[dict[str, str], list[str]]:
        facts, warnings, answers = check_node(transport, plan, node, {
            "torch": self._setup_argv([self.spec.python, "-c", TORCH_PROBE]),
            "setsid": ["sh", "-c", "command -v setsid"],
            "same_run": ["test", "!", "-e", f"{node.host_run_dir}/{STATE_DIR}/{PID_FILE}"],
        })
        torch = answers["torch"]
        answer = next((line for line in torch.output.splitlines() if line.startswith("@torch ")), None)
        if not torch.ok or answer is None:
            last = torch.output.strip().splitlines()[-1:] or ["no answer"]
            raise UserError(f"the Python on {node.host.name} cannot run the job: it has no torch "
                            f"({self.spec.python}: {last[0][-300:]})", file=plan.inventory_source,
                            field="cluster.payload.python")
        facts["torch"], facts["python"] = answer.split()[1], answer.split()[-1]
        if not answers["setsid"].ok:
            raise UserError(f"{node.host.name} has no setsid (util-linux): the bare payload starts each node in a "
                            "session of its own", file=plan.inventory_source, field=f"hosts.{node.host.name}")
        if not answers["same_run"].ok:
            raise UserError(f"run {plan.job.run_id} already ran on {node.host.name} ({node.host_run_dir})",
                            field=f"hosts.{node.host.name}")
        return facts, warnings

    def capture(self, transport: Transport, host: Host, smi: str | None) -> EnvironmentInfo:
        return capture_environment(transport, smi=smi, python=self.spec.python)

    def prepare(self, transport_for: TransportFor, plan: RunPlan) -> str:
        request = request_of(plan)
        with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
            def put(entry: BareNode) -> str:
                stage = Path(tmp) / f"node{entry.node.node_rank}"
                shutil.copytree(REPO_ROOT / "cases", stage / "cases",
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                (stage / "node.sh").write_text(entry.script, encoding="utf-8")
                transport = transport_for(entry.node.host)
                transport.put_tree(stage, f"{entry.run_dir}/{CODE_DIR}")
                return python_environment(transport, self.spec, plan.inventory_source)

            try:
                described = run_all(put, request.nodes)
            except HarnessError:  # nothing was launched: the code put on the nodes goes again
                run_all(lambda entry: transport_for(entry.node.host).run(remove_tree_argv(entry.run_dir),
                                                                           timeout=QUICK_S), request.nodes)
                raise
        return described[0] if len(set(described)) == 1 else "; ".join(
            f"{entry.node.host.name}: {text}" for entry, text in zip(request.nodes, described))

    def launch(self, transport: Transport, plan: RunPlan, node: NodePlan) -> None:
        entry = request_of(plan).node(node.node_rank)
        if entry.env_file is not None:  # node.sh reads it, then removes it
            transport.run(write_private_file_argv(entry.env_file), timeout=QUICK_S,
                          stdin=env_file_text(node.secret_env).encode()).check()
        transport.run(entry.start_argv, timeout=QUICK_S + START_WAIT_S).check()

    def watch_argv(self, plan: RunPlan, node: NodePlan) -> list[str]:
        return watch_argv(WATCH_SCRIPT, plan.job.run_id, node, plan.job.nproc_per_node, [node.host_run_dir])

    def parse_state(self, node_rank: int, text: str) -> NodeState:
        return parse_answer(node_rank, text, ("starting", "running"), ("no such process",), "process check")

    def _stop_argv(self, run_dir: str, run_id: str, node_rank: int, host: str, grace_s: int) -> list[str]:
        return ["sh", "-c", _STOP, "bench-stop", run_dir, str(grace_s), run_id, str(node_rank), host]

    def dump_stacks(self, transport: Transport, plan: RunPlan, node: NodePlan) -> bool:
        code = f"{node.host_run_dir}/{CODE_DIR}"
        # A paused process cannot write its stacks: continue every process of the node first.
        thawed = transport.run(["sh", "-c", _THAW, "bench-cont", plan.job.run_id, str(node.node_rank),
                                node.host.name], timeout=QUICK_S)
        transport.run(self._setup_argv(["env", f"PYTHONPATH={code}", self.spec.python, "-m", "cases.stacks",
                                        "--run-id", plan.job.run_id, "--node-rank", str(node.node_rank)]),
                      timeout=QUICK_S)
        return _FROZEN_MARK in thawed.output.split()

    def stop(self, transport: Transport, plan: RunPlan, node: NodePlan) -> None:
        transport.run(self._stop_argv(node.host_run_dir, plan.job.run_id, node.node_rank, node.host.name,
                                      STOP_GRACE_S), timeout=STOP_GRACE_S + QUICK_S)

    def tail(self, transport: Transport, plan: RunPlan, node: NodePlan, lines: int) -> list[str]:
        result = transport.run(["tail", "-n", str(lines), f"{node.host_run_dir}/{STATE_DIR}/{OUTPUT_FILE}"],
                               timeout=QUICK_S)
        return result.output.splitlines() if result.ok else []

    def collect(self, transport: Transport, node: NodePlan, folder: Path, secret_keys: set[str],
                secret_values: set[str]) -> NodeCollected:
        return _collect_run_dir(transport, node.host_run_dir, folder, secret_values)

    def collect_again(self, transport: Transport, host: Host, run_dir: str, node_rank: int, run_id: str,
                      folder: Path) -> NodeCollected:
        transport.run(self._stop_argv(run_dir, run_id, node_rank, host.name, STOP_GRACE_S),
                      timeout=STOP_GRACE_S + QUICK_S)
        got = _collect_run_dir(transport, run_dir, folder, set())
        transport.run(remove_file_argv(f"{run_dir}/{ENV_FILE_NAME}"), timeout=QUICK_S)
        return got

    def remove_node(self, transport: Transport, plan: RunPlan, node: NodePlan,
                    run_dir: str | None) -> tuple[list[str], list[str]]:
        problems: list[str] = []
        stopped = transport.run(self._stop_argv(node.host_run_dir, plan.job.run_id, node.node_rank,
                                                node.host.name, STOP_GRACE_S), timeout=STOP_GRACE_S + QUICK_S)
        if not stopped.ok:
            problems.append(f"processes of node {node.node_rank} may be left: {stopped.output.strip()[-200:]}")
        killed = [line for line in stopped.output.splitlines() if line.startswith("@killed ")]
        env_file = request_of(plan).node(node.node_rank).env_file
        if env_file is not None:
            removed = transport.run(remove_file_argv(env_file), timeout=QUICK_S)
            if not removed.ok:
                problems.append(f"secret file {env_file} not removed: {removed.output.strip()[-200:]}")
        if run_dir is not None:  # after the processes: their pid files are in it
            folder = transport.run(remove_tree_argv(run_dir), timeout=QUICK_S)
            if not folder.ok:
                problems.append(f"run folder {run_dir} not removed: {folder.output.strip()[-200:]}")
        return ([f"{node.container_name} (killed {killed[0].removeprefix('@killed ')})"] if killed else []), problems

    def leftovers(self, transport: Transport, host: Host, run_id: str | None) -> list[Leftover]:
        result = transport.run(["sh", "-c", _LIST_PROCESSES], timeout=QUICK_S)
        if not result.ok:
            raise RunFailed(f"{host.name}: cannot list processes: {result.output.strip()[-200:]}")
        nodes: dict[tuple[str, str, str], list[str]] = {}
        for pid, env in parse_processes(result.output).items():
            run, rank, labelled = (env.get(key, "") for key in RUN_ENV_KEYS)
            if run and rank.isdigit() and (run_id is None or run == run_id):
                nodes.setdefault((run, rank, labelled), []).append(pid)
        # Hosts may be one machine (the test hosts): a workload is its own host's.
        return [Leftover(host=host.name, container=f"{run}/node{rank}@{labelled}", name=f"bench-{run}-n{rank}",
                         run_id=run, state=f"{len(pids)} process(es)", labelled_host=labelled)
                for (run, rank, labelled), pids in sorted(nodes.items()) if labelled in ("", host.name)]

    def remove(self, transport: Transport, host: Host, leftovers: list[Leftover]) -> list[str]:
        removed = []
        for leftover in leftovers:
            run_node, _, labelled = leftover.container.partition("@")
            run, _, node = run_node.rpartition("/node")
            run_dir = f"{host.work_dir}/runs/{run}/node{node}"
            transport.run(self._stop_argv(run_dir, run, int(node), labelled, STOP_GRACE_S),
                          timeout=STOP_GRACE_S + QUICK_S)
            removed.append(leftover.container)
        return removed


def _collect_run_dir(transport: Transport, run_dir: str, folder: Path, secret_values: set[str]) -> NodeCollected:
    """A node's rank logs (under container/, as from a container), its torchrun output
    (container.log) and its state (payload/: pid, exit code)."""
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    complete = True
    for remote, local in ((f"{run_dir}/logs", folder / CONTAINER_FILES), (f"{run_dir}/{STATE_DIR}", folder / "payload")):
        try:
            fetched = transport.get_tree(remote, local)
        except (HarnessError, OSError) as exc:
            complete = False
            notes.append(f"{remote} could not be fetched: {exc}")
            continue
        notes += [f"not collected: {skip}" for skip in fetched.skipped]
    output = folder / "payload" / OUTPUT_FILE
    if output.is_file():
        output.replace(folder / NODE_LOG)
        if secret_values:
            redact_file(folder / NODE_LOG, secret_values)
    exit_code: int | None = None
    try:
        text = (folder / "payload" / EXIT_FILE).read_text(encoding="utf-8").strip()
        exit_code = int(text)
    except (OSError, ValueError):
        notes.append(f"no exit status in {run_dir}/{STATE_DIR}/{EXIT_FILE}: torchrun did not end by itself")
    (folder / "payload.json").write_text(json.dumps({"run_dir": run_dir, "exit_code": exit_code}) + "\n",
                                         encoding="utf-8")
    return NodeCollected(exit_code, complete, notes, last_lines(folder / NODE_LOG))

