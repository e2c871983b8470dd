"""What the morning reader and `campaign status` see, from constructed campaign
states and results.json files (no hosts): the node table (jobs, failures,
codes, stragglers, quarantine, replaced by), the all-reduce table, attempts per
repeat, the pairwise search, and an interrupted unit shown as interrupted with
its attempts explained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

from harness import REPO_ROOT
from harness.campaign.nodetable import node_rows
from harness.campaign.state import (
    Attempt,
    Bisection,
    CampaignState,
    Controller,
    PairRun,
    StateStore,
    Unit,
    new_folder,
)
from harness.campaign.summary import write_summary
from harness.campaign.view import controller_line, state_table, unit_status
from harness.core.results import Bandwidth, Efficiency, Metrics, RunResult, Straggler
from harness.faults.codes import Fault
from harness.faults.quarantine import QuarantineStore


def unit(job: int, repeat: int = 1, repeats: int = 1, status: str = "success", case: str = "resnet50",
         config: str = "2x1", hosts: tuple[str, ...] = ("node1", "node2")) -> Unit:
    return Unit(job=job, repeat=repeat, repeats=repeats, case=case, vendor="cpu", accelerator="cpu", config=config,
                hosts=list(hosts), status=status)  # type: ignore[arg-type]


def recorded(root: Path, result: RunResult) -> str:
    out = root / result.run_id / result.case / result.config_name
    out.mkdir(parents=True)
    (out / "results.json").write_text(result.model_dump_json())
    return str(out / "results.json")


def run(run_id: str, case: str = "resnet50", **extra: object) -> RunResult:
    return RunResult(run_id=run_id, case=case, vendor="cpu", accelerator="cpu", nnodes=2, nproc_per_node=1,
                     precision="fp32", fix_hp="/", status="success", **extra)  # type: ignore[arg-type]


def night(tmp_path: Path) -> tuple[CampaignState, Path]:
    """Job 1 (2 repeats): repeat 1 had node2 quarantined and ran on the spare node3,
    with a straggler on node1; repeat 2 ran on node1+node2 after one leftover-container
    failure. Job 2, the all-reduce, ran once; job 3's bandwidth gate failed and the
    pairwise runs named node2."""
    folder = new_folder(tmp_path, "nightly")
    first, second = unit(0, 1, 2), unit(0, 2, 2)
    straggler = Straggler(rank=0, node_rank=0, host="node1", device="cpu", score=0.4, compute_s_p50=2.0,
                          fastest_compute_s_p50=0.8, why="host cpu 97%")
    first.attempts = [Attempt(number=1, run_id="j1r1-a1", status="success", hosts=["node1", "node3"],
                              replaced={"node2": "node3"},
                              results_json=recorded(tmp_path, run("j1r1-a1", metrics=Metrics(p_core=10.0),
                                                                  stragglers=[straggler])))]
    second.attempts = [
        Attempt(number=1, run_id="j1r2-a1", status="failed", failure_kind="infra", failure="health gate failed",
                hosts=["node1", "node2"],
                faults=[Fault(host="node2", code="BENCH-H04", evidence="leftover container", run_id="j1r2-a1")]),
        Attempt(number=2, run_id="j1r2-a2", status="success", hosts=["node1", "node2"],
                results_json=recorded(tmp_path, run("j1r2-a2", metrics=Metrics(p_core=11.0))))]
    allreduce = unit(1, case="allreduce")
    busbw = run("j2-a1", case="allreduce", bandwidth=Bandwidth(op="all_reduce", world_size=2, peak_busbw_gbps=1.234,
                                                                  avg_busbw_gbps=0.5),
                efficiency=Efficiency(precision="fp32", expected_metric="peak_busbw_gbps", expected=2.468,
                                      expected_source="reference/cpu.yaml", of_expected=0.5))
    allreduce.attempts = [Attempt(number=1, run_id="j2-a1", status="success", hosts=["node1", "node2"],
                                  results_json=recorded(tmp_path, busbw))]
    gated = unit(2, status="failed")
    gated.attempts = [Attempt(number=1, run_id="j3-a1", status="failed", failure_kind="infra", hosts=["node1", "node2"],
                              failure="health gate failed: all-reduce bus bandwidth 0.01 GB/s below 1",
                              faults=[Fault(host="node2", code="BENCH-F02", evidence="pair", run_id="j3-a1-pair2"),
                                      Fault(host="node2", code="BENCH-F02", evidence="job", run_id="j3-a1")])]
    store = QuarantineStore(tmp_path)
    (entry,) = store.record(gated.attempts[0].faults)
    state = CampaignState(name="nightly", stamp=folder.name, suite="s", inventory="h", status="finished",
                          units=[first, second, allreduce, gated], quarantined=[entry])
    state.bisections.append(Bisection(
        job=2, run_id="j3-a1", trigger="all-reduce bus bandwidth 0.01 GB/s below 1", hosts=["node1", "node2"],
        min_busbw_gbps=1.0, named="node2", code="BENCH-F02", note="node2 is in every slow or failed pair (1 of 2)",
        pairs=[PairRun(hosts=["node1", "node3"], run_id="j3-a1-pair1", verdict="ok", peak_busbw_gbps=1.5),
               PairRun(hosts=["node2", "node3"], run_id="j3-a1-pair2", verdict="slow", peak_busbw_gbps=0.01,
                       detail="peak bus bandwidth 0.01 GB/s below 1")]))
    return state, folder


def test_the_node_table_counts_jobs_failures_codes_stragglers_quarantine_and_replacements(tmp_path: Path) -> None:
    state, _ = night(tmp_path)

    def load(path: str | None) -> RunResult | None:
        return RunResult.model_validate_json(Path(path).read_text()) if path else None

    rows = {row.host: row for row in node_rows(state, load)}
    assert list(rows) == ["node1", "node2", "node3"]
    node1, node2, node3 = rows["node1"].cells(), rows["node2"].cells(), rows["node3"].cells()
    # host, jobs run, failures, codes seen, straggler flags, quarantined, replaced by
    assert node1 == ["node1", "4", "2", "/", "1", "/", "/"]
    assert node2[:5] == ["node2", "3", "2", "BENCH-F02 ×2, BENCH-H04", "/"]
    assert node2[5].startswith("since ") and "2 faults within 12 h (BENCH-F02), until " in node2[5]
    assert node2[6] == "node3 (j1r1-a1)"
    assert node3 == ["node3", "1", "0", "/", "/", "/", "spare for node2 (j1r1-a1)"]


def test_the_summary_has_attempts_per_repeat_the_all_reduce_table_the_nodes_and_the_search(tmp_path: Path) -> None:
    state, folder = night(tmp_path)
    text = write_summary(state, folder, [], tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1: resnet50 cpu 2x1"))
    assert "| 1, 2 (per repeat) |" in row
    assert "## All-reduce" in text
    assert "| 2: allreduce cpu 2x1 | j2-a1 | 2 | 1.23 | 0.5 | 50% | 2.47 GB/s (reference/cpu.yaml) |" in text
    assert "## Nodes" in text and "| host | jobs run | failures | codes seen | straggler flags | quarantined | " \
                                  "replaced by |" in text
    assert "| node3 | 1 | 0 | / | / | / | spare for node2 (j1r1-a1) |" in text
    assert "- after j3-a1 on node1, node2 (slow: below 1 GB/s): all-reduce bus bandwidth 0.01 GB/s below 1" in text
    assert "  - node2 + node3: slow, peak busbw 0.01 GB/s (j3-a1-pair2): peak bus bandwidth 0.01 GB/s below 1" in text
    assert "**node2** named (BENCH-F02 slow in every pair (pairwise all-reduce)): node2 is in every" in text
    html = (folder / "summary.html").read_text()
    assert '<h2 id="allreduce">' in html and '<h2 id="nodes">' in html and '<h2 id="bisect">' in html
    assert "<td>spare for node2 (j1r1-a1)</td>" in html and "1, 2 (per repeat)" in html


def interrupted_state(folder: Path) -> CampaignState:
    running = unit(0, status="running")
    running.attempts = [Attempt(number=1, run_id="nightly-x-j1-a1", status="interrupted",
                                failure_kind="interrupted", failure="interrupted")]
    waiting = unit(1, status="waiting")
    return CampaignState(name="nightly", stamp=folder.name, suite="s", inventory="h", status="interrupted",
                         units=[running, waiting], controller=Controller(pid=999_999_999))


def test_an_interrupted_campaigns_running_unit_shows_interrupted_and_its_attempt_is_explained(tmp_path: Path) -> None:
    state = interrupted_state(tmp_path)
    assert unit_status(state, state.units[0]) == "interrupted" and unit_status(state, state.units[1]) == "waiting"
    console = Console(record=True, width=200)
    console.print(state_table(state))
    (row,) = [line for line in console.export_text().splitlines() if "job 1:" in line]
    assert "interrupted" in row and "running" not in row
    assert "1 (1 interrupted: not counted as a retry)" in row
    assert controller_line(state, None).endswith("pid 999999999 (stopped); `campaign run SUITE --resume` continues")
    state.status = "running"  # a controller killed outright: the state still says running
    assert unit_status(state, state.units[0], alive=False) == "interrupted"
    assert unit_status(state, state.units[0], alive=True) == "running"
    assert "is gone (killed or rebooted)" in controller_line(state, False)


def test_campaign_status_of_a_stopped_campaign_says_interrupted_not_running(tmp_path: Path) -> None:
    folder = new_folder(tmp_path, "nightly")
    state = interrupted_state(folder)
    state.status = "running"  # its controller pid does not exist: killed
    StateStore(folder).save(state)
    proc = subprocess.run([sys.executable, "-m", "harness", "campaign", "status", "--results", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert f"({folder}): interrupted" in out
    assert "0 running, 1 interrupted, 1 waiting" in out and "pid 999999999 is gone (killed or rebooted)" in out


def test_a_spare_used_again_and_again_is_one_part_with_its_count() -> None:
    from harness.campaign.nodetable import NodeRow

    row = NodeRow(host="ghost", replaced_by={"j1-a1": "spare", "j2-a1": "spare", "j3-a1": "spare", "j3-a2": "other"})
    assert row.cells()[6] == "spare (3 attempts); other (j3-a2)"
    spare = NodeRow(host="spare", stood_in_for={"j1-a1": "ghost", "j2-a1": "ghost"})
    assert spare.cells()[6] == "spare for ghost (2 attempts)"
