"""The files written beside results.json: README.md and report.html."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from harness.core.results import Metrics, NodeOutcome, RunResult
from harness.report.tables import write_reports


class Cells(HTMLParser):
    """Text of every <td>, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "td":
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def result(run_id: str, status: str, failure: str | None = None) -> RunResult:
    return RunResult(
        run_id=run_id, case="resnet50", vendor="nvidia", accelerator="A100", nnodes=2, nproc_per_node=8,
        precision="fp32", fix_hp="bs=256,lr=0.8", status=status, failure=failure,
        metrics=Metrics(e2e_time=1234.4, p_whole=10576.2, p_train=11085.0, p_core=11874.4, acc=None,
                        mem_used_gib=27.94, mem_total_gib=40.0, world_size=16) if status == "success" else None,
        nodes=[NodeOutcome(host="node1", node_rank=0, container="bench-x-n0", exit_code=0 if status == "success" else 1,
                           log_dir="/r/node1_noderank0")],
        environment={"node1": {"host": "node1", "os": "Ubuntu 20.04.6 LTS", "kernel": "5.4.0-113-generic x86_64"}},
        phase_seconds={"preflight": 0.91, "wait": 812.0},
    )


def test_readme_and_html_carry_the_same_cells(tmp_path: Path) -> None:
    ok = result("night-1", "success")
    bad = result("night-2", "failed", failure="node 1 (node2) exited 1\nrank 9: <RuntimeError> & more")
    readme = write_reports([ok, bad], tmp_path)
    table = readme.read_text().splitlines()
    assert table[0] == "* 性能指标"
    assert "| A100两机8卡（2x8） | fp32      | bs=256,lr=0.8 | 1234     | 10576   | 11085   | 11874  | /   | 27.9/40.0 |" in table

    html = (tmp_path / "report.html").read_text()
    parser = Cells()
    parser.feed(html)
    # The vendor columns, then the harness's own (MFU, % exp, J/1k: not judged here, `/`), then the status.
    assert parser.cells[:14] == ["night-1", "A100两机8卡（2x8）", "fp32", "bs=256,lr=0.8", "1234", "10576", "11085",
                                 "11874", "/", "27.9/40.0", "/", "/", "/", "success"]
    assert "night-2" in parser.cells and "failed" in parser.cells
    # Failure text is shown, escaped: a log line cannot inject markup.
    assert "rank 9: &lt;RuntimeError&gt; &amp; more" in html and "<RuntimeError>" not in html
    assert "Ubuntu 20.04.6 LTS" in parser.cells and "/r/node1_noderank0" in parser.cells
    assert "812.00 s" in parser.cells
