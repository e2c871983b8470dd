"""Hang triage (harness/core/hang.py) on real stack dumps: Python processes that
register faulthandler on SIGUSR1 as cases/run.py does, block in different
places, and are signalled; then the grouping, a rank without stacks and a file
holding two appended dumps."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.backends.bare import _THAW
from harness.core.hang import hang_triage, main_thread, parse_dumps, ranks_text, read_rank_stacks
from harness.core.results import NodeOutcome

DEADLINE_S = 20.0

RUN_PY = '''\
import faulthandler
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "site-packages"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench-site"))  # as a container's mounted packages
import driver  # noqa: E402


def main():
    mode, stacks, phase = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    out = stacks.open("a", encoding="utf-8")
    faulthandler.register(signal.SIGUSR1, file=out, all_threads=True)
    threading.Thread(target=driver.idle, daemon=True).start()  # a second thread, listed before main
    driver.train(mode, phase)


main()
'''

DRIVER_PY = '''\
import threading
import time

from fakecomm.collective import all_reduce
from ddp_comm_hooks.default_hooks import allreduce_hook


def idle():
    threading.Event().wait()


def compute(phase):
    phase.write_text("compute")
    while True:
        time.sleep(0.05)  # the compute rank


def wait_for_go(phase):
    phase.write_text("before")
    go = phase.with_suffix(".go")
    while not go.exists():
        time.sleep(0.02)  # the moving rank, first phase


def step(phase):
    phase.write_text("step")
    while True:
        time.sleep(0.05)  # as DDP awaits a bucket's all-reduce: in C++, no collective frame


def train(mode, phase):
    if mode == "compute":
        compute(phase)
    if mode == "step":
        step(phase)
    if mode == "hook":
        allreduce_hook(phase)
    if mode == "moves":
        wait_for_go(phase)
    all_reduce(phase)  # the waiting ranks
'''

COLLECTIVE_PY = '''\
import threading


def all_reduce(phase):
    phase.write_text("all_reduce")
    threading.Event().wait()
'''


HOOKS_PY = '''\
import threading


def _allreduce_fut(phase):
    phase.write_text("hook")
    threading.Event().wait()  # as if frozen here: the real one returns at once


def allreduce_hook(phase):
    return _allreduce_fut(phase)
'''


def line_of(source: str, marker: str) -> int:
    return next(number for number, line in enumerate(source.splitlines(), 1) if marker in line)


def wait_until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        time.sleep(0.02)


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


class Rank:
    """One training-like process writing its stacks where a node's collected logs keep them."""

    def __init__(self, code: Path, folder: Path, rank: int, mode: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stacks = folder / f"stacks_rank{rank}.log"
        self.phase = folder.parent / f"phase_rank{rank}.txt"
        self.proc = subprocess.Popen([sys.executable, str(code / "cases" / "run.py"), mode, str(self.stacks),
                                      str(self.phase)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.dumps = 0

    def reached(self, phase: str) -> None:
        def there() -> bool:
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise AssertionError(f"the process ended ({self.proc.returncode}): {self.proc.stderr.read()!r}")
            return text_of(self.phase) == phase
        wait_until(f"{self.proc.args} in {phase}", there)

    def dump(self) -> None:
        """SIGUSR1, then until the new dump is complete (its main thread ends with <module>)."""
        self.proc.send_signal(signal.SIGUSR1)
        self.dumps += 1
        wait_until(f"dump {self.dumps} in {self.stacks}", lambda: text_of(self.stacks).count(" in <module>\n") >= self.dumps)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE_S)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A cases/ tree and an installed package, so the dumps' paths look like a node's."""
    root = tmp_path / "code"
    (root / "cases").mkdir(parents=True)
    (root / "site-packages" / "fakecomm").mkdir(parents=True)
    (root / "cases" / "run.py").write_text(RUN_PY)
    (root / "cases" / "driver.py").write_text(DRIVER_PY)
    (root / "site-packages" / "fakecomm" / "__init__.py").write_text("")
    (root / "site-packages" / "fakecomm" / "collective.py").write_text(COLLECTIVE_PY)
    # where the test hosts' containers see torch: not below a site-packages folder
    (root / "bench-site" / "ddp_comm_hooks").mkdir(parents=True)
    (root / "bench-site" / "ddp_comm_hooks" / "__init__.py").write_text("")
    (root / "bench-site" / "ddp_comm_hooks" / "default_hooks.py").write_text(HOOKS_PY)
    return root


@pytest.fixture
def ranks() -> Iterator[list[Rank]]:
    started: list[Rank] = []
    yield started
    for rank in started:
        rank.end()


def node(results: Path, host: str, node_rank: int) -> NodeOutcome:
    return NodeOutcome(host=host, node_rank=node_rank, container=f"c{node_rank}", exit_code=None,
                       log_dir=str(results / f"{host}_noderank{node_rank}"))


def four_ranks(code: Path, results: Path, ranks: list[Rank]) -> list[NodeOutcome]:
    """2 nodes x 2: ranks 0, 1 (alpha) and 3 (beta) wait in all_reduce, rank 2 (beta) computes."""
    nodes = [node(results, "alpha", 0), node(results, "beta", 1)]
    for rank, mode in enumerate(["wait", "wait", "compute", "wait"]):
        ranks.append(Rank(code, Path(nodes[rank // 2].log_dir) / "container", rank, mode))
    for rank in ranks:
        rank.reached("compute" if rank is ranks[2] else "all_reduce")
        rank.dump()
    return nodes


def test_a_rank_computing_while_the_others_wait_is_the_outlier(code: Path, tmp_path: Path,
                                                              ranks: list[Rank]) -> None:
    nodes = four_ranks(code, tmp_path / "results", ranks)
    hang = hang_triage(nodes, world_size=4)
    compute_line = line_of(DRIVER_PY, "# the compute rank")
    train_line = line_of(DRIVER_PY, "# the waiting ranks")
    assert [group.ranks for group in hang.groups] == [[0, 1, 3], [2]]
    waiting = hang.groups[0]
    # Event.wait inside Condition.wait, then the collective: the innermost three frames
    assert all(frame.startswith("threading.py:") and frame.endswith(" in wait") for frame in waiting.frames[:2])
    assert waiting.frames[2] == f"fakecomm/collective.py:{line_of(COLLECTIVE_PY, 'Event().wait()')} in all_reduce"
    assert waiting.training_frame == f"cases/driver.py:{train_line} in train"
    assert hang.groups[1].frames[0] == f"cases/driver.py:{compute_line} in compute"
    assert [(o.rank, o.host, o.node_rank, o.training_frame) for o in hang.outliers] == [
        (2, "beta", 1, f"cases/driver.py:{compute_line} in compute")]
    assert hang.missing_ranks == []
    assert hang.summary.splitlines() == [
        f"hung apart from the others: rank 2 (beta) in cases/driver.py:{compute_line} in compute",
        f"ranks 0, 1, 3 wait in {waiting.frames[0]} (from cases/driver.py:{train_line} in train)"]


def test_the_main_thread_is_the_one_through_cases_run_main(code: Path, tmp_path: Path, ranks: list[Rank]) -> None:
    nodes = four_ranks(code, tmp_path / "results", ranks)
    stacks = read_rank_stacks(nodes)
    threads = stacks[0].threads
    assert len(threads) == 2 and threads[0].frames[0].function == "wait"  # the idle thread is listed first
    main = stacks[0].main
    assert main is not None and main is threads[1]
    assert [f.function for f in main.frames[-2:]] == ["main", "<module>"]
    # without a cases/run.py frame, the thread that took the signal; without that, the first
    others = [t for t in threads if t is not main]
    assert main_thread(others) is others[0]


def test_a_rank_without_stacks_is_missing(code: Path, tmp_path: Path, ranks: list[Rank]) -> None:
    results = tmp_path / "results"
    nodes = four_ranks(code, results, ranks)
    ranks[3].stacks.unlink()
    ranks[1].stacks.write_text("")  # the handler never wrote: as good as none
    hang = hang_triage(nodes, world_size=4)
    assert hang.missing_ranks == [1, 3]
    assert [group.ranks for group in hang.groups] == [[0], [2]]  # one rank each: the lowest rank's comes first
    assert [o.rank for o in hang.outliers] == [2]
    # the watchdog naming rank 0 does not move it: rank 0 stands in the collective, rank 2 does not
    assert [o.rank for o in hang_triage(nodes, world_size=4, suspects=[0]).outliers] == [2]
    assert hang.summary.splitlines()[-1] == "no stacks came back from ranks 1, 3"
    nothing = hang_triage([node(results, "gamma", 5)], world_size=2)
    assert nothing.groups == [] and nothing.missing_ranks == [0, 1]
    assert nothing.summary == "no stacks came back from ranks 0, 1"


def test_all_ranks_in_one_place_is_said_so(code: Path, tmp_path: Path, ranks: list[Rank]) -> None:
    results = tmp_path / "results"
    folder = results / "alpha_noderank0" / "container"
    ranks.extend(Rank(code, folder, rank, "wait") for rank in range(2))
    for rank in ranks:
        rank.reached("all_reduce")
        rank.dump()
    hang = hang_triage([node(results, "alpha", 0)], world_size=2)
    assert hang.outliers == [] and [group.ranks for group in hang.groups] == [[0, 1]]
    assert hang.summary.startswith("all 2 ranks wait in one place: threading.py:")


def test_of_two_appended_dumps_the_last_counts(code: Path, tmp_path: Path, ranks: list[Rank]) -> None:
    results = tmp_path / "results"
    moving = Rank(code, results / "alpha_noderank0" / "container", 0, "moves")
    ranks.append(moving)
    moving.reached("before")
    moving.dump()
    moving.phase.with_suffix(".go").write_text("")
    moving.reached("all_reduce")
    moving.dump()
    dumps = parse_dumps(moving.stacks.read_text())
    assert len(dumps) == 2 and all(len(dump) == 2 for dump in dumps)
    # The innermost frame of the rank's own code: a dump may land while the phase file is still being
    # written (pathlib's frames above it), not only in the wait that follows.
    own = [next((f.function for f in thread.frames if f.path.endswith(("driver.py", "collective.py"))), None)
           if thread else None for thread in map(main_thread, dumps)]
    assert own == ["wait_for_go", "all_reduce"]
    stacks = read_rank_stacks([node(results, "alpha", 0)])
    functions = [f.function for f in stacks[0].frames]
    assert "all_reduce" in functions and "wait_for_go" not in functions  # the last dump counts


def test_other_header_forms_and_blank_separated_threads() -> None:
    text = ("Thread 0x0000000000000002 [worker] (most recent call first):\n"
            '  File "/usr/lib/python3.13/threading.py", line 359 in wait\n'
            "\n"
            "Current thread 0x0000000000000001 [MainThread] (most recent call first):\n"
            '  File "/opt/bench/cases/driver.py", line ??? in train\n'
            '  File "/opt/bench/cases/run.py", line 221 in main\n'
            "  <no Python frame>\n"
            "Stack (most recent call first):\n"
            '  File "/opt/bench/cases/driver.py", line 7 in step\n')
    dumps = parse_dumps(text)
    assert [[t.thread_id for t in dump] for dump in dumps] == [["0x0000000000000002", "0x0000000000000001"], [""]]
    main = main_thread(dumps[0])
    assert main is not None and main.frames[0].text == "cases/driver.py:0 in train"
    assert dumps[0][0].frames[0].text == "threading.py:359 in wait"


def test_ranks_text_runs() -> None:
    assert ranks_text([3]) == "rank 3"
    assert ranks_text([0, 2, 3]) == "ranks 0, 2, 3"
    assert ranks_text([9, 0, 1, 2, 3, 5]) == "ranks 0-3, 5, 9"


def test_of_two_ranks_the_one_outside_the_collective_is_the_outlier(code: Path, tmp_path: Path,
                                                                    ranks: list[Rank]) -> None:
    """A 2x1 run with one rank paused mid-step: one rank each way. The watchdog may name
    the waiting rank (both stop reporting together); the one not in the collective is named."""
    results = tmp_path / "results"
    nodes = [node(results, "alpha", 0), node(results, "beta", 1)]
    for rank, mode in enumerate(["wait", "compute"]):
        ranks.append(Rank(code, Path(nodes[rank].log_dir) / "container", rank, mode))
    ranks[0].reached("all_reduce")
    ranks[1].reached("compute")
    for rank in ranks:
        rank.dump()
    hang = hang_triage(nodes, world_size=2, suspects=[0])
    assert [group.ranks for group in hang.groups] == [[0], [1]]
    assert [(o.rank, o.host) for o in hang.outliers] == [(1, "beta")]
    assert hang.summary.splitlines()[0].startswith("hung apart from the others: rank 1 (beta) in cases/driver.py:")


@pytest.mark.parametrize("hook_rank", [0, 1])
def test_a_rank_inside_ddps_hook_is_the_outlier_not_the_one_awaiting_it(code: Path, tmp_path: Path,
                                                                        ranks: list[Rank], hook_rank: int) -> None:
    """DDP's hook starts the all-reduce and returns; a rank stopped inside it (a paused
    container) is the one the other waits for, though its stack names an all-reduce and
    the waiting rank's shows only its step."""
    results = tmp_path / "results"
    nodes = [node(results, "alpha", 0), node(results, "beta", 1)]
    for rank in range(2):
        ranks.append(Rank(code, Path(nodes[rank].log_dir) / "container", rank, "hook" if rank == hook_rank else "step"))
    for rank in ranks:
        rank.reached("hook" if rank is ranks[hook_rank] else "step")
        rank.dump()
    hang = hang_triage(nodes, world_size=2, suspects=[0, 1])
    host = nodes[hook_rank].host
    assert [(o.rank, o.host) for o in hang.outliers] == [(hook_rank, host)]
    assert hang.groups[0].ranks == [1 - hook_rank]
    assert hang.groups[0].frames[0] == f"cases/driver.py:{line_of(DRIVER_PY, '# as DDP awaits')} in step"
    assert hang.summary.splitlines()[0] == (
        f"hung apart from the others: rank {hook_rank} ({host}) in cases/driver.py:{line_of(DRIVER_PY, 'allreduce_hook(phase)')} in train")


@pytest.mark.parametrize("frozen_rank", [0, 1])
def test_a_frozen_nodes_rank_is_the_outlier_when_the_stacks_cannot_tell(code: Path, tmp_path: Path,
                                                                        ranks: list[Rank], frozen_rank: int) -> None:
    """A paused rank stood in its optimizer step while the other waited in backward, in C++:
    neither stack names a collective, and the watchdog names the waiting rank. The node
    found frozen (the backend thawed it to dump its stacks) is the one the other waited for."""
    results = tmp_path / "results"
    nodes = [node(results, "alpha", 0), node(results, "beta", 1)]
    modes = ["compute" if rank == frozen_rank else "step" for rank in range(2)]
    for rank, mode in enumerate(modes):
        ranks.append(Rank(code, Path(nodes[rank].log_dir) / "container", rank, mode))
    for rank, mode in zip(ranks, modes):
        rank.reached(mode)
        rank.dump()
    waiting = 1 - frozen_rank
    unaided = hang_triage(nodes, world_size=2, suspects=[waiting])
    assert [o.rank for o in unaided.outliers] == [waiting]  # the stacks and the watchdog alone blame it
    hang = hang_triage(nodes, world_size=2, suspects=[waiting], frozen_nodes=[frozen_rank])
    host = nodes[frozen_rank].host
    assert [(o.rank, o.host) for o in hang.outliers] == [(frozen_rank, host)]
    assert hang.frozen_nodes == [f"node {frozen_rank} ({host})"]
    lines = hang.summary.splitlines()
    assert lines[0] == (f"hung apart from the others: rank {frozen_rank} ({host}) in cases/driver.py:"
                        f"{line_of(DRIVER_PY, '# the compute rank')} in compute")
    assert lines[2] == f"frozen (paused or stopped) when the stall was found: node {frozen_rank} ({host})"


def test_the_bare_thaw_says_whether_a_process_of_the_node_was_stopped(tmp_path: Path) -> None:
    """The bare payload's thaw before a stack dump: real processes of two nodes of one run,
    one of them stopped with SIGSTOP; only that node reads as frozen, and it runs again."""
    env = {"BENCH_RUN_ID": "thaw-run", "BENCH_HOST": "alpha", "PATH": "/usr/bin:/bin"}
    procs = {node_rank: subprocess.Popen(["sleep", "300"], env={**env, "BENCH_NODE_RANK": str(node_rank)})
             for node_rank in (0, 1)}
    try:
        procs[1].send_signal(signal.SIGSTOP)
        wait_until("sleep stopped", lambda: process_state(procs[1].pid) == "T")

        def thaw(node_rank: int) -> str:
            return subprocess.run(["sh", "-c", _THAW, "bench-cont", "thaw-run", str(node_rank), "alpha"],
                                  capture_output=True, text=True, check=True, timeout=DEADLINE_S).stdout
        assert thaw(0).split() == []
        assert thaw(1).split() == ["frozen"]
        wait_until("sleep continued", lambda: process_state(procs[1].pid) == "S")
        assert thaw(1).split() == []  # thawed: not frozen any more
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=DEADLINE_S)


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
