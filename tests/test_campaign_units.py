"""Campaign pieces without hosts: statistics, the state file, the lock's
staleness rule, notifications (a real HTTP server on 127.0.0.1 and a real
command), the health gates on recorded smi output, the summary with its plots
and comparisons, and `campaign status`."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from campaignkit import TINY, checked, write_suite
from rich.console import Console

from harness import REPO_ROOT
from harness.backends.transport import CommandResult, FetchedFiles, Transport
from harness.campaign.gates import device_problem
from harness.campaign.notify import Notifier
from harness.campaign.state import Attempt, CampaignState, StateStore, Unit, folders, new_folder
from harness.campaign.stats import spread
from harness.campaign.suite import Notify
from harness.campaign.summary import write_summary
from harness.campaign.view import CampaignView, live_layout
from harness.core.inventory import Host
from harness.core.results import Metrics, NodeOutcome, NodeVerdict, RunResult
from harness.core.watch import StepProgress
from harness.errors import UserError
from harness.hostlock import LockHolder, stale_reason

# --------------------------------------------------------------------------- statistics


def test_spread_and_the_olympic_mean() -> None:
    four = spread([10.0, 12.0, None, 11.0, 13.0])
    assert four is not None and four.n == 4 and four.median == 11.5 and four.olympic_mean is None
    assert four.min == 10.0 and four.max == 13.0 and four.stdev == pytest.approx(1.2909944)
    assert four.cv == pytest.approx(1.2909944 / 11.5)
    five = spread([100.0, 10.0, 11.0, 12.0, 1.0])
    assert five is not None and five.olympic_mean == pytest.approx(11.0) and five.mean == pytest.approx(26.8)
    one = spread([5.0])
    assert one is not None and one.stdev is None and one.cv is None and one.describe() == "median 5.0"
    assert spread([None]) is None


# --------------------------------------------------------------------------- state


def unit(job: int = 0, repeat: int = 1, status: str = "waiting") -> Unit:
    return Unit(job=job, repeat=repeat, repeats=1, case="resnet50", vendor="cpu", accelerator="cpu", config="2x1",
                fix_hp=TINY, status=status)  # type: ignore[arg-type]


def test_state_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    folder = new_folder(tmp_path, "nightly")
    second = new_folder(tmp_path, "nightly")
    assert folder != second and folder.parent == tmp_path / "campaigns" / "nightly"
    store = StateStore(folder)
    state = CampaignState(name="nightly", stamp=folder.name, suite="s.yaml", inventory="h.yaml", units=[unit()])
    state.units[0].attempts.append(Attempt(number=1, run_id="nightly-x-j1-a1", status="failed", failure_kind="infra"))
    store.save(state)
    assert [p.name for p in folder.iterdir()] == ["state.json"]  # no temporary file left
    again = store.load()
    assert again.units[0].attempts[0].failure_kind == "infra" and again.units[0].tries == 1
    assert folders(tmp_path, "nightly") == [folder]
    (folder / "state.json").write_text("{}")
    with pytest.raises(UserError, match="not a campaign state"):
        store.load()


def test_abandoned_and_interrupted_attempts_do_not_use_up_retries() -> None:
    found = unit()
    found.attempts = [Attempt(number=1, run_id="a", status="abandoned"), Attempt(number=2, run_id="b", status="failed"),
                      Attempt(number=3, run_id="c", status="interrupted")]
    assert found.tries == 1


# --------------------------------------------------------------------------- lock staleness


def holder(**over: object) -> LockHolder:
    values = {"controller": socket.gethostname(), "pid": os.getpid(), "campaign": "nightly x", "since": "now"}
    values.update(over)
    return LockHolder(**values)  # type: ignore[arg-type]


def test_a_lock_is_stale_when_its_controller_is_gone_or_silent() -> None:
    me = holder()
    assert stale_reason(me, 0.0, 3600) is None
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert "is gone" in (stale_reason(holder(pid=dead.pid), 0.0, 3600) or "")
    assert "another process" in (stale_reason(holder(pid_started=1.0), 0.0, 3600) or "")
    elsewhere = holder(controller="other-controller", pid=1, heartbeat=time.time() - 7200)
    assert "no sign of life" in (stale_reason(elsewhere, 0.0, 3600) or "")
    assert stale_reason(holder(controller="other-controller", pid=1), 0.0, 3600) is None
    assert stale_reason(None, time.time() - 10, 3600) is None and stale_reason(None, 0.0, 3600)


# --------------------------------------------------------------------------- notifications


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
            self.send_response(500 if self.path == "/broken" else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_and_command_get_the_json(webhook: tuple[str, list[dict]], tmp_path: Path) -> None:
    url, received = webhook
    out = tmp_path / "command.json"
    command = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"]
    warnings: list[str] = []
    notifier = Notifier(Notify(webhook=f"{url}/hook", command=command), warnings.append)
    assert notifier.send({"event": "job_failed", "campaign": "nightly"}) == []
    assert received == [{"path": "/hook", "type": "application/json",
                         "json": {"event": "job_failed", "campaign": "nightly"}}]
    assert json.loads(out.read_text()) == {"event": "job_failed", "campaign": "nightly"}
    assert warnings == []


def test_a_failing_notification_is_logged_never_fatal(webhook: tuple[str, list[dict]]) -> None:
    url, _ = webhook
    warnings: list[str] = []
    closed = f"http://127.0.0.1:{socket.socket().getsockname()[1] or 9}/hook"
    notifier = Notifier(Notify(webhook=f"{url}/broken", command=["/nonexistent/page-oncall"], timeout=5), warnings.append)
    problems = notifier.send({"event": "campaign_finished"})
    assert any("HTTP 500" in p for p in problems) and any("page-oncall" in p for p in problems)
    assert len(warnings) == 2
    assert Notifier(Notify(webhook=closed, timeout=5), warnings.append).send({}) != []


# --------------------------------------------------------------------------- gates


class CannedTransport(Transport):
    def __init__(self, output: str, exit_code: int | None = 0) -> None:
        self.host, self.output, self.exit_code = "node1", output, exit_code

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        return CommandResult(self.host, argv, self.exit_code, self.output)

    def put_tree(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def get_tree(self, remote: str, local: Path) -> FetchedFiles:
        raise NotImplementedError


def test_device_count_gate_with_the_vendors_tool() -> None:
    listing = "\n".join("NVIDIA A100-SXM4-40GB, 40960 MiB, 470.57.02" for _ in range(8)) + "\n"
    host = Host(name="node1", address="10.0.0.1", devices=8)
    assert device_problem(CannedTransport(listing), host, "nvidia-smi") is None
    seven = "\n".join(listing.splitlines()[:7]) + "\n"
    problem = device_problem(CannedTransport(seven), host, "nvidia-smi") or ""
    assert "node1" in problem and "sees 7 device(s)" in problem and "devices: 8" in problem
    assert "exited 9" in (device_problem(CannedTransport("NVIDIA-SMI has failed", 9), host, "nvidia-smi") or "")


# --------------------------------------------------------------------------- live view


def three_jobs() -> CampaignState:
    done, running, waiting = unit(0, 1, "success"), unit(1, 1, "running"), unit(2, 1)
    done.attempts = [Attempt(number=1, run_id="nightly-x-j1-a1", status="success")]
    running.attempts = [Attempt(number=1, run_id="nightly-x-j2-a1", status="failed", failure_kind="infra",
                                failure="host lost"),
                        Attempt(number=2, run_id="nightly-x-j2-a2", started_at="2026-11-20T18:00:00+00:00")]
    return CampaignState(name="nightly", stamp="20261120-180000", suite="s", inventory="h",
                         units=[done, running, waiting])


def test_the_live_layout_shows_the_running_jobs_throughput_elapsed_time_and_the_counts() -> None:
    console = Console(record=True, force_terminal=True, width=200)
    step = StepProgress(epoch=1, step=40, samples_per_s=12345.67)
    now = dt.datetime(2026, 11, 20, 18, 3, 12, tzinfo=dt.timezone.utc)
    console.print(live_layout(three_jobs(), ("nightly-x-j2-a2", step), elapsed_s=3725, now=now))
    text = console.export_text()
    (row,) = [line for line in text.splitlines() if "job 2:" in line]
    assert "running" in row and "nightly-x-j2-a2" in row and "counted" not in row
    assert "12,345.7 samples/s · epoch 1 step 40 · 3m12s elapsed" in row
    assert "1 ok, 0 failed, 1 running, 1 waiting; 1h02m elapsed" in text
    # a step of an earlier attempt is not shown as this one's
    stale = Console(record=True, force_terminal=True, width=200)
    stale.print(live_layout(three_jobs(), ("nightly-x-j2-a1", step), elapsed_s=5, now=now))
    assert "no step yet · 3m12s elapsed" in stale.export_text()


def test_the_view_redraws_in_place_on_a_terminal_and_writes_timestamped_lines_elsewhere() -> None:
    terminal = Console(record=True, force_terminal=True, width=200)
    view = CampaignView(terminal)
    state = three_jobs()
    view.transition(state, "job 2: attempt 2, run nightly-x-j2-a2")
    view.progress(StepProgress(epoch=0, step=3, samples_per_s=88.0))
    view.close()
    shown = terminal.export_text()
    assert "campaign: job 2: attempt 2, run nightly-x-j2-a2 [1 ok, 0 failed, 1 waiting;" in shown
    assert "88.0 samples/s · epoch 0 step 3" in shown and "1 ok, 0 failed, 1 running, 1 waiting" in shown

    log = io.StringIO()
    plain = CampaignView(Console(file=log, force_terminal=False, width=200))
    plain.transition(state, "job 2: attempt 2, run nightly-x-j2-a2")
    plain.progress(StepProgress(epoch=0, step=3, samples_per_s=88.0))
    plain.event("summary: s.md")
    plain.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2, lines
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d campaign: "
    assert re.fullmatch(stamp + r"job 2: attempt 2, run nightly-x-j2-a2 \[1 ok, 0 failed, 1 waiting; 0\.0 min\]",
                        lines[0])
    assert re.fullmatch(stamp + "summary: s.md", lines[1])


# --------------------------------------------------------------------------- summary


def recorded(results: Path, run_id: str, p_core: float, steps: int = 5) -> str:
    out = results / run_id / "resnet50" / "2x1"
    node = out / "node1_noderank0"
    (node / "container").mkdir(parents=True)
    lines = [f':::BENCH {{"time_ms": {1000 + s}, "key": "step", "rank": 0, "value": {{"step": {s}, "step_s": 0.{s}}}}}\n'
             for s in range(1, steps + 1)]
    (node / "container" / "events_rank0.log").write_text("".join(lines))
    (node / "monitor.csv").write_text("timestamp_ms,host,kind,device_index,mem_used_mib,mem_total_mib,util_pct,power_w,"
                                      "temp_c,cpu_pct,mem_used_gib,mem_total_gib,system_power_w\n"
                                      "1000,node1,host,,,,,,,50,3.5,24,\n2000,node1,host,,,,,,,80,3.9,24,\n")
    result = RunResult(run_id=run_id, case="resnet50", vendor="cpu", accelerator="cpu", nnodes=2, nproc_per_node=1,
                       precision="fp32", fix_hp=TINY, status="success", finished_at=f"2026-11-2{len(run_id) % 10}",
                       metrics=Metrics(p_core=p_core, p_train=p_core / 2, p_whole=p_core / 3, e2e_time=9.0),
                       nodes=[NodeOutcome(host="node1", node_rank=0, container="c", exit_code=0, log_dir=str(node))],
                       node_verdicts=[NodeVerdict(node_rank=0, host="node1", devices=["cpu"], verdict="ok"),
                                      NodeVerdict(node_rank=1, host="node2", devices=["cpu"], verdict="slow",
                                                  detail="rank 1, score 0.41, why: host cpu 97%")])
    (out / "results.json").write_text(result.model_dump_json())
    return str(out / "results.json")


def test_summary_has_spread_failures_and_every_plot(tmp_path: Path) -> None:
    folder = new_folder(tmp_path, "nightly")
    repeats = [unit(0, r, "success") for r in (1, 2, 3, 4, 5)]
    for index, item in enumerate(repeats):
        item.repeats = 5
        item.attempts = [Attempt(number=1, run_id=f"ok{index}", status="success",
                                 results_json=recorded(tmp_path, f"ok{index}", 100.0 + index * 10))]
    failed = unit(1, 1, "failed")
    failed.attempts = [Attempt(number=1, run_id="bad", status="failed", failure_kind="job",
                               failure="node 1 (node2) exited 1: rank 1 failed\nmore")]
    state = CampaignState(name="nightly", stamp=folder.name, suite="s", inventory="h", units=[*repeats, failed],
                          status="finished")
    summary = write_summary(state, folder, [], tmp_path)
    text = summary.read_text()
    assert "| 1: resnet50 cpu 2x1" in text and "median 120.0 (n=5" in text and "olympic 120.0" in text
    assert "job: node 1 (node2) exited 1: rank 1 failed" in text
    # Every node of every repeat has its verdict line, the slow one with its score and why.
    assert "- node: ok4: node 1 (node2, cpu): slow (rank 1, score 0.41, why: host cpu 97%)" in text
    assert text.count(": node 0 (node1, cpu): ok") == 5
    html = (folder / "summary.html").read_text()
    assert html.count('<img class="plot" src="data:image/png;base64,') == 3  # repeats, step time, monitor
    assert 'class="node-flag">node: ok0: node 1 (node2, cpu): slow (rank 1' in html
    assert len(list((folder / "plots").glob("*.png"))) == 3


def test_summary_compares_with_the_reference_page_and_the_previous_night(tmp_path: Path) -> None:
    page = REPO_ROOT / "tests" / "fixtures" / "vendor_pages" / "nvidia-resnet50.md"
    path = write_suite(tmp_path, [{"case": "resnet50", "vendor": "nvidia", "config": "1x8", "fix_hp": "bs=256,lr=0.8",
                                   "reference": str(page)}])
    planned = checked(path)

    def night(value: float) -> tuple[CampaignState, Path]:
        folder = new_folder(tmp_path, "nightly")
        run_id = f"night-{folder.name}"
        out = tmp_path / run_id / "resnet50" / "1x8"
        out.mkdir(parents=True)
        result = RunResult(run_id=run_id, case="resnet50", vendor="nvidia", accelerator="A100", nnodes=1,
                           nproc_per_node=8, precision="fp32", fix_hp="bs=256,lr=0.8", status="success",
                           metrics=Metrics(p_core=value, p_train=value, p_whole=value, e2e_time=100.0))
        (out / "results.json").write_text(result.model_dump_json())
        done = Unit(job=0, repeat=1, repeats=1, case="resnet50", vendor="nvidia", accelerator="A100", config="1x8",
                    fix_hp="bs=256,lr=0.8", status="success",
                    attempts=[Attempt(number=1, run_id=run_id, status="success", results_json=str(out / "results.json"))])
        state = CampaignState(name="nightly", stamp=folder.name, suite="s", inventory="h", units=[done])
        StateStore(folder).save(state)
        return state, folder

    night(5000.0)
    state, folder = night(5500.0)
    text = write_summary(state, folder, planned, tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1:"))
    assert "| 1.10 |" in row  # p_core against the previous campaign of the same name
    page_line = next(line for line in text.splitlines() if line.startswith("- vs reference page:"))
    assert "p_core x0.90" in page_line and "A100单机8卡（1x8）" in page_line  # 5500 vs the page's 6105


def test_campaign_status_shows_the_latest_campaign(tmp_path: Path) -> None:
    folder = new_folder(tmp_path, "nightly")
    running = unit(0, 1, "running")
    running.attempts = [Attempt(number=1, run_id="nightly-x-j1-a1")]
    StateStore(folder).save(CampaignState(name="nightly", stamp=folder.name, suite="s", inventory="h",
                                          units=[running, unit(1, 1)]))
    proc = subprocess.run([sys.executable, "-m", "harness", "campaign", "status", "--results", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "nightly-x-j1-a1" in proc.stdout and "1 running, 1 waiting" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "harness", "campaign", "status", str(tmp_path)], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "not a campaign folder" in missing.stderr


def test_a_campaign_log_stamps_every_line_once_the_runs_progress_included() -> None:
    from harness.campaign.view import stamped
    from harness.core.events import Event
    from harness.core.progress import ProgressBoard
    from harness.core.progress_view import ProgressShown

    log = io.StringIO()
    console = stamped(stamped(Console(file=log, width=200, soft_wrap=True)))  # twice: still one stamp a line
    console.print("[dim]preflight    1.20 s[/dim]\nwarning: two lines")
    console.print("a line in ", end="")
    console.print("two prints")
    board = ProgressBoard({0: "alpha"}, nproc_per_node=1, world_size=1, started=0.0)
    board.update({0: Event(0, "heartbeat", 0, {"phase": "first_batch", "waited_s": 0})}, now=1.0)
    with ProgressShown(console, board) as shown:
        shown.show(1.0)
    CampaignView(console).event("job 1: attempt 1")
    lines = log.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    assert [re.sub(stamp, "", line, count=1) for line in lines] == [
        "preflight    1.20 s", "warning: two lines", "a line in two prints",
        "training: node 0 (alpha): waiting for the first batch · 1s elapsed", "campaign: job 1: attempt 1"]
    assert all(re.match(stamp, line) and not re.match(stamp + stamp, line) for line in lines)
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert stamped(terminal).file is terminal.file  # a terminal is left as it is
