"""An in-process ClusterBackend for the runner's failure paths, without Docker or SSH.

A test scripts what each node does (its states over successive polls, the
events its ranks write) and what goes wrong (launch or image errors, a host
that stops answering, an interrupt); the runner's flow around it is the real one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cases.protocol import encode_event, event_file_name, stacks_file_name
from harness.backends.docker_request import docker_plan
from harness.backends.image import plan_job_image
from harness.core.backend import ClusterBackend, Leftover, NodeState, PreflightReport
from harness.core.events import Event
from harness.core.inventory import Host, Inventory
from harness.core.job import Job
from harness.core.plan import RunPlan
from harness.core.results import NodeOutcome
from harness.core.vendor import VendorSpec
from harness.hostinfo.model import EnvironmentInfo


@dataclass
class FakeNode:
    # One state per poll; the last one repeats. A state is "running", "exit:<code>", "gone", "unreachable"
    # or "scheduler:<kind>:<detail>" (a scheduler's verdict on how the node ended).
    states: list[str] = field(default_factory=lambda: ["exit:0"])
    # global rank -> (time_ms, key, value) events its log holds once collected
    events: dict[int, list[tuple[int, str, dict]]] = field(default_factory=dict)
    # global rank -> the stack dumps its stacks_rank<r>.log holds once collected
    stacks: dict[int, str] = field(default_factory=dict)
    polls: int = 0

    def next_state(self, node_rank: int) -> NodeState:
        state = self.states[min(self.polls, len(self.states) - 1)]
        self.polls += 1
        if state.startswith("exit:"):
            return NodeState(node_rank, "exited", int(state.split(":")[1]), "exited")
        if state.startswith("scheduler:"):  # "scheduler:<kind>:<what it said>", as Slurm's TIMEOUT or NODE_FAIL
            _, kind, said = state.split(":", 2)
            return NodeState(node_rank, "exited", None, said, kind=kind)  # type: ignore[arg-type]
        return NodeState(node_rank, state, detail=f"scripted {state}")  # type: ignore[arg-type]


class FakeBackend(ClusterBackend):
    def __init__(self, nodes: list[FakeNode], *, fail_image: Exception | None = None,
                 fail_launch: Exception | None = None, on_poll: Callable[[int], None] | None = None,
                 fail_allocate: Exception | None = None) -> None:
        self.nodes = nodes
        self.fail_image = fail_image
        self.fail_launch = fail_launch
        self.fail_allocate = fail_allocate
        self.on_poll = on_poll
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self._poll_rounds = 0

    def _call(self, name: str, ranks: list[int] | None = None) -> None:
        self.calls.append((name, tuple(ranks or ())))

    def called(self, name: str) -> list[tuple[int, ...]]:
        return [ranks for call, ranks in self.calls if call == name]

    def plan(self, job: Job, inventory: Inventory, vendor: VendorSpec) -> RunPlan:
        return docker_plan(job, inventory, vendor, plan_job_image(job, inventory, vendor))

    def preflight(self, plan: RunPlan, clean_orphans: bool = False) -> PreflightReport:
        self._call("preflight")
        return PreflightReport()

    def allocate(self, plan: RunPlan) -> RunPlan:
        self._call("allocate")
        if self.fail_allocate is not None:
            raise self.fail_allocate
        return plan

    def release(self, plan: RunPlan) -> None:
        self._call("release")

    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        return {}

    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        self._call("start_monitors")

    def stop_monitors(self) -> None:
        self._call("stop_monitors")

    def prepare_image(self, plan: RunPlan) -> str:
        self._call("prepare_image")
        if self.fail_image is not None:
            raise self.fail_image
        return "sha256:" + "0" * 64

    def launch(self, plan: RunPlan) -> None:
        self._call("launch")
        if self.fail_launch is not None:
            raise self.fail_launch

    def poll(self, plan: RunPlan, node_ranks: list[int]) -> list[NodeState]:
        self._poll_rounds += 1
        if self.on_poll is not None:
            self.on_poll(self._poll_rounds)
        return [self.nodes[rank].next_state(rank) for rank in node_ranks]

    def progress(self, plan: RunPlan, node_ranks: list[int]) -> dict[int, Event]:
        latest: dict[int, Event] = {}
        for rank in node_ranks:
            for global_rank, events in self.nodes[rank].events.items():
                if events:
                    time_ms, key, value = events[-1]
                    latest[global_rank] = Event(time_ms, key, global_rank, value)
        return latest

    def dump_stacks(self, plan: RunPlan, node_ranks: list[int]) -> list[int]:
        self._call("dump_stacks", node_ranks)
        return []

    def stop(self, plan: RunPlan, node_ranks: list[int]) -> None:
        self._call("stop", node_ranks)

    def tail(self, plan: RunPlan, node_rank: int, lines: int) -> list[str]:
        return []

    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        self._call("collect", node_ranks)
        outcomes = []
        for rank in node_ranks:
            node, fake = plan.nodes[rank], self.nodes[rank]
            folder = dest / node.dir_name / "container"
            folder.mkdir(parents=True, exist_ok=True)
            for global_rank, events in fake.events.items():
                lines = [encode_event(time_ms, key, global_rank, value) for time_ms, key, value in events]
                (folder / event_file_name(global_rank)).write_text("".join(lines))
            for global_rank, dumps in fake.stacks.items():
                (folder / stacks_file_name(global_rank)).write_text(dumps)
            last = fake.states[-1]
            outcomes.append(NodeOutcome(host=node.host.name, node_rank=rank, container=node.container_name,
                                        exit_code=int(last.split(":")[1]) if last.startswith("exit:") else None,
                                        log_dir=str(dest / node.dir_name), remote_run_dir=node.host_run_dir))
        return outcomes

    def cleanup(self, plan: RunPlan, node_ranks: list[int], collected: set[int]) -> list[str]:
        self._call("cleanup", node_ranks)
        return [plan.nodes[rank].container_name for rank in node_ranks]

    def collect_again(self, run_id: str, hosts: list[Host], dest: Path) -> list[NodeOutcome]:
        return []

    def leftovers(self, hosts: list[Host], run_id: str | None = None) -> list[Leftover]:
        return []

    def remove(self, leftovers: list[Leftover]) -> list[str]:
        return []
