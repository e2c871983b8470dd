"""Is the figure right: reference data (reference/*.yaml), MFU and % of expected
(harness/expect/), and where they show (terminal table, report.html, campaign
summary; never the vendor page's table)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from test_bare import TINY, bench, free_port, local_inventory

from harness import REPO_ROOT
from harness.campaign.state import Attempt, CampaignState, StateStore, Unit, new_folder
from harness.campaign.summary import write_summary
from harness.core.events import Event, read_event_files
from harness.core.inventory import Inventory
from harness.core.metrics import compute_metrics
from harness.core.results import Bandwidth, Energy, RunResult
from harness.errors import UserError
from harness.expect.efficiency import judge, with_efficiency
from harness.expect.reference import REFERENCE_DIR, load_reference, reference_files
from harness.fabric.model import Fabric
from harness.report.tables import metric_table_markdown, print_results, report_html

RECORDED = REPO_ROOT / "tests" / "fixtures" / "events" / "resnet50_cpu_1x2"  # a real 2-rank resnet50 run on cpu
NUMBER_LINE = re.compile(r"^\s*(?:-\s*)?[A-Za-z_][A-Za-z0-9_]*:\s*-?[0-9][0-9.,_e+-]*\s*(#.*)?$")
A100_NAME = "NVIDIA A100-SXM4-40GB"


# --------------------------------------------------------------------------- reference data


def test_every_reference_file_loads_and_every_figure_names_its_source() -> None:
    files = reference_files()
    assert {p.stem for p in files} >= {"A100", "H100", "H200", "BI-V100", "R300"}
    for path in files:
        reference = load_reference(path.stem)
        assert reference is not None and reference.accelerator == path.stem
        numeric = [line for line in path.read_text(encoding="utf-8").splitlines() if NUMBER_LINE.match(line)]
        assert numeric, f"{path.name}: no figures?"
        for line in numeric:
            comment = NUMBER_LINE.match(line).group(1)  # type: ignore[union-attr]
            assert comment and len(comment.strip("# ")) > 10, f"{path.name}: a figure without its source: {line!r}"
        assert not reference.peak_tflops or reference.peak_source
        assert all(e.source for e in reference.expected)
        assert all(b.source for b in [*reference.busbw_intra_node, *reference.busbw_per_hca])


def test_every_accelerator_a_vendor_names_has_a_reference_file_but_cpu() -> None:
    named = {yaml.safe_load(p.read_text())["accelerator"] for p in (REPO_ROOT / "Dockerfiles").glob("*/vendor.yaml")}
    named |= {p.stem.split("x")[0] for p in (REPO_ROOT / "cases").glob("*/configs/*/*.yaml")}
    assert named - {"cpu"} <= {p.stem for p in reference_files()}
    assert load_reference("cpu") is None  # no default figures for the cpu vendor


def test_the_a100_figures_are_the_datasheet_and_the_pages() -> None:
    a100 = load_reference("A100")
    assert a100 is not None
    assert a100.peak_tflops == {"fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312}  # dense, not sparsity
    rows = {(e.case, e.precision, e.config, e.batch_size): e.p_core for e in a100.expected}
    assert rows[("resnet50", "fp32", "1x1", 256)] == 799 and rows[("resnet50", "fp32", "2x8", 256)] == 11874
    assert rows[("resnet50", "tf32", "1x8", 256)] == 7248 and rows[("resnet50", "amp", "1x1", 256)] == 2470


@pytest.mark.parametrize(("text", "field"), [
    ("accelerator: X1\nvendor: v\npeak_tflops: {fp64: 1.0}\npeak_source: s\n", "peak_tflops.fp64"),
    ("accelerator: X1\nvendor: v\npeak_tflops: {fp32: 1.0}\n", "peak_source"),
    ("accelerator: X1\nvendor: v\nexpected: [{case: resnet50, precision: fp32, config: 1x1, batch_size: 8, "
     "p_core: 10}]\n", "expected.[0].source"),
    ("accelerator: X2\nvendor: v\n", "accelerator"),
])
def test_a_bad_reference_file_names_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "X1.yaml").write_text(text)
    with pytest.raises(UserError) as raised:
        load_reference("X1", tmp_path)
    assert str(tmp_path / "X1.yaml") in str(raised.value) and (raised.value.field or "").startswith(field)


def test_the_inventory_validates_site_peaks_and_fabric_rates() -> None:
    assert Inventory.model_validate({"cluster": {"peak_tflops": {"fp32": 1.5, "bf16": 3.0}}}).cluster.peak_tflops
    for bad in ({"fp64": 1.0}, {"fp32": 0}, {"fp32": "fast"}):
        with pytest.raises(ValueError):
            Inventory.model_validate({"cluster": {"peak_tflops": bad}})
    assert Fabric(type="ib", hcas=["mlx5_0"], link_gbps=200).link_gbps == 200
    with pytest.raises(ValueError, match="link_gbps"):
        Fabric(type="ethernet", link_gbps=100)


# --------------------------------------------------------------------------- MFU and % of expected


def recorded_run(flops: float | None = 1.0e9, **changes: object) -> tuple[RunResult, dict[int, list[Event]]]:
    """The recorded cpu run as the runner reads it, with a flops event of `flops` on each rank."""
    by_rank = read_event_files(RECORDED)
    for rank, events in by_rank.items():
        events.insert(3, Event(events[2].time_ms, "flops", rank, {"flops_per_sample": flops}))
    metrics = compute_metrics(by_rank)
    fields: dict[str, object] = dict(run_id="rec", case="resnet50", vendor="cpu", accelerator="cpu", nnodes=1,
                                     nproc_per_node=2, precision="fp32", fix_hp="bs=4", status="success",
                                     metrics=metrics, effective_config={"batch_size": 4, "image_size": 32})
    fields.update(changes)
    return RunResult.model_validate(fields), by_rank


def site(peaks: dict[str, float] | None = None, fabric: dict[str, object] | None = None) -> Inventory:
    return Inventory.model_validate({"cluster": {"peak_tflops": peaks or {}, "fabric": fabric or {}}})


def test_mfu_on_the_cpu_vendor_with_the_site_peak_is_the_formula() -> None:
    result, by_rank = recorded_run(flops=7.3e8)
    efficiency = judge(result, by_rank, site({"fp32": 1.5, "bf16": 3.0}))
    assert result.metrics is not None and result.metrics.p_core and result.metrics.world_size == 2
    assert efficiency.mfu == pytest.approx(7.3e8 * result.metrics.p_core / (1.5e12 * 2))
    assert (efficiency.peak_tflops, efficiency.peak_key, efficiency.devices) == (1.5, "fp32", 2)
    assert "cluster.peak_tflops" in efficiency.peak_source
    bf16, _ = recorded_run(flops=7.3e8, precision="bf16")
    assert judge(bf16, by_rank, site({"fp32": 1.5, "bf16": 3.0})).peak_tflops == 3.0


def test_no_peak_is_slash_with_the_reason_never_a_default() -> None:
    result, by_rank = recorded_run()
    efficiency = judge(result, by_rank, site())
    assert efficiency.mfu is None and efficiency.peak_tflops is None
    assert "no reference data for accelerator cpu" in efficiency.mfu_missing
    assert efficiency.of_expected is None and "reference/cpu.yaml does not exist" in efficiency.expected_missing
    # A site peak for another precision does not stand in for this one.
    other = judge(result, by_rank, site({"bf16": 3.0}))
    assert other.mfu is None and "no fp32" in other.mfu_missing
    # R300 has a reference file but no verified peak.
    r300, _ = recorded_run(accelerator="R300", vendor="kunlunxin")
    assert "reference/R300.yaml has no dense fp32 peak" in judge(r300, by_rank, site()).mfu_missing
    # A run without a flops event (an old image) has no MFU either.
    old, old_ranks = recorded_run(flops=None)
    assert "no FLOPs per sample" in judge(old, old_ranks, site({"fp32": 1.5})).mfu_missing


def a100_run(p_core: float, device: str = A100_NAME, **changes: object) -> tuple[RunResult, dict[int, list[Event]]]:
    """The recorded run relabelled as an A100 1x1 fp32 run of the page's recipe (bs 256, 224 px)."""
    fields: dict[str, object] = {"vendor": "nvidia", "accelerator": "A100", "nnodes": 1, "nproc_per_node": 1,
                                 "effective_config": {"batch_size": 256, "image_size": 224}, **changes}
    result, by_rank = recorded_run(flops=24.3e9, **fields)
    for events in by_rank.values():
        for event in events:
            if event.key == "world":
                event.value["device_name"] = device
    assert result.metrics is not None
    metrics = result.metrics.model_copy(update={"p_core": p_core, "world_size": 1})
    return result.model_copy(update={"metrics": metrics}), by_rank


def test_percent_of_expected_against_the_page_row_of_the_same_recipe() -> None:
    result, by_rank = a100_run(760.0)
    efficiency = judge(result, by_rank, site())
    assert efficiency.of_expected == pytest.approx(760 / 799) and efficiency.expected == 799
    assert "FlagPerf resnet50" in efficiency.expected_source and "reference/A100.yaml" in efficiency.expected_source
    assert efficiency.mfu == pytest.approx(24.3e9 * 760 / 19.5e12)  # the A100 datasheet's dense fp32
    # amp is judged against the fp16 peak, and against DeepLearningExamples' AMP row.
    amp, _ = a100_run(2000.0, precision="amp")
    amp_eff = judge(amp, by_rank, site())
    assert amp_eff.peak_key == "fp16" and amp_eff.peak_tflops == 312 and amp_eff.of_expected == pytest.approx(2000 / 2470)
    # Another batch size is another recipe: nothing expected.
    other, _ = a100_run(700.0, effective_config={"batch_size": 64, "image_size": 224})
    assert "no expected p_core for resnet50 fp32 1x1 at batch 64" in judge(other, by_rank, site()).expected_missing


def test_a_run_on_another_device_is_not_judged_by_the_a100_file() -> None:
    result, by_rank = a100_run(900.0, device="NVIDIA H100 80GB HBM3")
    efficiency = judge(result, by_rank, site())
    assert efficiency.mfu is None and efficiency.of_expected is None
    assert "ran on 'NVIDIA H100 80GB HBM3'" in efficiency.mfu_missing
    assert judge(result, by_rank, site({"fp32": 60.0})).mfu is not None  # the site's own figure is taken


def busbw_run(nnodes: int, peak: float) -> RunResult:
    return RunResult(run_id="ar", case="allreduce", vendor="nvidia", accelerator="A100", nnodes=nnodes,
                     nproc_per_node=8, precision="fp32", fix_hp="/", status="success",
                     bandwidth=Bandwidth(op="all_reduce", world_size=8 * nnodes, peak_busbw_gbps=peak))


def test_busbw_against_the_fabric() -> None:
    one = judge(busbw_run(1, 200.0), {}, site())
    assert one.expected_metric == "peak_busbw_gbps" and one.of_expected == pytest.approx(200 / 230)
    assert "NVLink 3" in one.expected_source and one.mfu is None
    ib = {"type": "ib", "hcas": ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"], "link_gbps": 200}
    two = judge(busbw_run(2, 80.0), {}, site(fabric=ib))
    assert two.expected == pytest.approx(4 * 23) and "4 x 23 GB/s per 200 Gb/s HCA" in two.expected_source
    eight = {**ib, "hcas": [f"mlx5_{i}" for i in range(12)]}
    assert judge(busbw_run(2, 200.0), {}, site(fabric=eight)).expected == 230  # the node's NVLink caps 12 HCAs
    ethernet = judge(busbw_run(2, 10.0), {}, site(fabric={"type": "ethernet"}))
    assert ethernet.of_expected is None and "type ethernet" in ethernet.expected_missing


# --------------------------------------------------------------------------- where it shows


def test_the_terminal_table_has_the_new_columns_and_the_lines_under_it() -> None:
    judged, by_rank = a100_run(760.0)
    judged = with_efficiency(judged, by_rank, site())
    plain, _ = recorded_run()
    plain = with_efficiency(plain, by_rank, site()).model_copy(update={
        "run_id": "plain", "energy": Energy(missing="no tool reported power on node1")})
    powered = judged.model_copy(update={"run_id": "powered", "energy": Energy(energy_j=5000.0, j_per_1k_samples=1234.0,
                                                                              window_s=10.0, source="nvidia-smi")})
    out = io.StringIO()
    print_results([judged, plain, powered], Console(file=out, width=400), verbose=False)
    text = out.getvalue()
    header = next(line for line in text.splitlines() if "p_core" in line)
    assert all(column in header for column in ("MFU", "% exp", "J/1k"))
    row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("rec "))
    assert f"{24.3e9 * 760 / 19.5e12:.1%}" in row and "95%" in row and row.rstrip(" │").endswith("/")
    assert "1,234" in next(line for line in text.splitlines() if "powered" in line and "%" in line)
    plain_row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("plain "))
    assert plain_row.count("/") >= 3
    assert "rec: MFU 94.7% = 24.3 GFLOP/sample x p_core 760 / (19.5 TFLOPS dense fp32 x 1 device(s))" in text
    assert "NVIDIA A100 Tensor Core GPU datasheet" in text and "% exp 95% = p_core 760 / expected 799" in text
    assert "plain: MFU /: no dense peak: no reference data for accelerator cpu" in text
    assert "plain: J/1k /: no tool reported power on node1" in text


def test_html_report_and_vendor_table_keep_their_own_columns() -> None:
    judged, by_rank = a100_run(760.0)
    judged = with_efficiency(judged, by_rank, site())
    html = report_html([judged])
    assert "<th>MFU</th><th>% exp</th><th>J/1k</th>" in html and "expected 799" in html
    # The vendor page's table is FlagPerf's, unchanged.
    assert "MFU" not in metric_table_markdown([judged]) and "J/1k" not in metric_table_markdown([judged])


def test_the_campaign_summary_shows_mfu_and_percent_of_expected(tmp_path: Path) -> None:
    folder = new_folder(tmp_path, "nightly")
    judged, by_rank = a100_run(760.0, run_id="night-1")
    judged = with_efficiency(judged, by_rank, site())
    out = tmp_path / "night-1" / "resnet50" / "1x1"
    out.mkdir(parents=True)
    (out / "results.json").write_text(judged.model_dump_json())
    done = Unit(job=0, repeat=1, repeats=1, case="resnet50", vendor="nvidia", accelerator="A100", config="1x1",
                fix_hp="bs=256,lr=0.8", status="success",
                attempts=[Attempt(number=1, run_id="night-1", status="success", results_json=str(out / "results.json"))])
    state = CampaignState(name="nightly", stamp=folder.name, suite="s", inventory="h", units=[done])
    StateStore(folder).save(state)
    text = write_summary(state, folder, [], tmp_path).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| job |"))
    row = next(line for line in text.splitlines() if line.startswith("| 1:"))
    assert header.count("|") == row.count("|") and "| MFU | % exp | J/1k |" in header
    assert "| 94.7% | 95% | / |" in row
    assert "- night-1: % exp 95% = p_core 760 / expected 799" in text
    assert "<th>MFU</th>" in (folder / "summary.html").read_text()


@pytest.mark.usefixtures("training_processes")
def test_a_local_cpu_run_records_flops_and_mfu_from_the_site_peak(tmp_path: Path) -> None:
    """A real run (local access, bare payload, 2 ranks on this machine's cpu): the ranks count
    their model's FLOPs, and results.json's MFU is the formula over its own recorded figures."""
    hosts = local_inventory(tmp_path, free_port())
    data = yaml.safe_load(hosts.read_text())
    data["cluster"]["peak_tflops"] = {"fp32": 1.5, "bf16": 3.0}
    hosts.write_text(yaml.safe_dump(data))
    proc = bench(hosts, tmp_path / "results", "mfu-local", "--config", "1x2", "--fix-hp", f"{TINY},max_steps=3",
                 case="resnet50")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "results" / "mfu-local" / "resnet50" / "1x2" / "results.json").read_text())
    eff, metrics = result["efficiency"], result["metrics"]
    assert eff["flops_per_sample"] > 0 and eff["peak_tflops"] == 1.5 and eff["devices"] == 2
    assert eff["mfu"] == pytest.approx(eff["flops_per_sample"] * metrics["p_core"] / (1.5e12 * 2))
    assert "MFU" in proc.stdout and "x 2 device(s)); peak: the inventory's cluster.peak_tflops" in proc.stdout
    # The count is the run's own model at its own input shape (resnet50, 10 classes, 32 px: cases/resnet50 cpu.yaml).
    code = ("from cases.flops import flops_per_sample; from torchvision.models import resnet50; "
            "print(flops_per_sample(resnet50(num_classes=10), (3, 32, 32)))")
    counted = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert float(counted.stdout) == pytest.approx(eff["flops_per_sample"])


def test_reference_dir_is_the_repository_folder() -> None:
    assert REFERENCE_DIR == REPO_ROOT / "reference" and REFERENCE_DIR.is_dir()
