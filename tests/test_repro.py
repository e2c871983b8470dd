"""Reproducing a vendor page (harness/pages/repro.py, compare.py) and the page of our own runs
(harness/pages/readme.py): framework pins, the environment check before a run and the comparison after
it. Nothing here needs Docker or a host: run_job runs on a stand-in backend."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from fake_backend import FakeBackend
from rich.console import Console

from harness.core.inventory import load_inventory
from harness.core.job import Job, make_job
from harness.core.plan import RunPlan
from harness.core.results import Metrics, NodeOutcome, RunResult
from harness.core.runner import build_plan, run_job
from harness.core.vendor import load_vendor
from harness.errors import UserError
from harness.hostinfo.model import EnvironmentInfo, FrameworkVersions
from harness.pages.compare import compare, comparison_markdown, pick_row, record_reference
from harness.pages.parse import parse_page, read_page, split_table_row
from harness.pages.readme import build_readme
from harness.pages.render import render_page
from harness.pages.repro import EnvironmentGate, framework_pins, host_drift, vendor_for_page

PAGES = Path(__file__).parent / "fixtures" / "vendor_pages"
PAGE_NAMES = sorted(path.name for path in PAGES.glob("*.md"))
WORLD_LINE = ('[default0]::::BENCH {"time_ms": 1, "key": "world", "rank": 0, '
              '"value": {"world_size": 8, "precision": "fp32", "torch": "2.14.1+cu130"}}')


def a100_host(**changes: object) -> EnvironmentInfo:
    """A host as the nvidia pages describe it (DGX A100, driver 470, Ubuntu 20.04)."""
    info = EnvironmentInfo(
        host="node1",
        machine_model="DGXA100",
        accelerator_model="NVIDIA A100-SXM4-40GB",
        accelerator_count=8,
        accelerator_memory_mib=40960.0,
        accelerator_driver="470.129.06",
        cpu_model="AMD EPYC 7742 64-Core Processor",
        network_type="InfiniBand",
        network_rate="200Gb/s",
        os="Ubuntu 20.04.4 LTS",
        kernel="5.4.0-113-generic x86_64",
        docker_version="20.10.16",
        framework=FrameworkVersions(torch="1.8.0a0+52ea372", cuda="11.2", cudnn="8100", nccl="2.8.4"),
    )
    return info.model_copy(update=changes)


def make_result(
    *,
    nnodes: int = 1,
    nproc: int = 8,
    fix_hp: str = "/",
    status: str = "success",
    run_id: str = "20261125-000000-aaaaaa",
    env: EnvironmentInfo | None = None,
    synthetic: bool = False,
    **metrics: float | None,
) -> RunResult:
    values = {"e2e_time": 28000.0, "p_whole": 4400.0, "p_train": 4500.0, "p_core": 4600.0,
              "acc": 75.1, "mem_used_gib": 27.61, "mem_total_gib": 40.0, **metrics}
    return RunResult(
        run_id=run_id, case="resnet50", vendor="nvidia", accelerator="A100", nnodes=nnodes,
        nproc_per_node=nproc, precision="fp32", fix_hp=fix_hp, status=status,
        failure=None if status == "success" else "node 0 (node1) exited 1\nmore detail",
        metrics=Metrics(**values) if status == "success" else None,
        image="bench/nvidia:0123456789abcdef (sha256:feed)",
        effective_config={"synthetic": synthetic},
        environment={"node1": (env or a100_host()).model_dump()},
    )


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def metric_cells(text: str) -> list[list[str]]:
    """The 性能指标 rows of a rendered page, as cells."""
    lines = lines_of(text)
    start = max(i for i, line in enumerate(lines) if line.startswith("| 配置") or line.startswith("| Config"))
    return [split_table_row(line) for line in lines[start + 2:] if line.startswith("|")]


# --------------------------------------------------------------------------- readme


def test_readme_zh_has_the_pages_sections_environment_and_rows() -> None:
    results = [make_result(), make_result(nproc=1, fix_hp="bs=256,lr=0.8", p_core=799.4, acc=None,
                                          run_id="20261125-000000-bbbbbb")]
    readme = build_readme(results)
    text = render_page(readme.page, "zh")
    lines = lines_of(text)
    for expected in [
        "### nvidia 配置与运行信息参考",
        "#### 环境配置",
        "- ##### 硬件环境",
        "    - 机器型号: DGXA100",
        "    - 加速卡型号: NVIDIA A100-SXM4-40GB",
        "    - CPU型号: AMD EPYC 7742 64-Core Processor",
        "    - 多机网络类型、带宽: InfiniBand，200Gb/s",
        "- ##### 软件环境",
        "   - OS版本：Ubuntu 20.04.4 LTS",
        "   - OS kernel版本: 5.4.0-113-generic x86_64",
        "   - 加速卡驱动版本：470.129.06",
        "   - Docker 版本：20.10.16",
        "   - Docker镜像和版本：bench/nvidia:0123456789abcdef",
        "   - 训练框架版本：pytorch-1.8.0a0+52ea372",
        "   - 依赖软件版本：",
        "     - cuda: 11.2",
        "     - cudnn: 8100",
        "     - nccl: 2.8.4",
        "### 运行情况",
        "* 通用指标",
        "* 性能指标",
    ]:
        assert expected in lines, expected
    assert lines.index("* 通用指标") < lines.index("* 性能指标")
    general = {split_table_row(line)[0]: split_table_row(line)[1] for line in lines if line.startswith("| ")}
    assert general["模型"] == "resnet50"
    assert general["数据集"] == "ImageNet2012"
    assert general["硬件设备简称"] == "A100"
    assert metric_cells(text) == [
        ["A100单机8卡（1x8）", "fp32", "/", "28000", "4400", "4500", "4600", "75.10%", "27.6/40.0"],
        ["A100单机单卡（1x1）", "fp32", "bs=256,lr=0.8", "28000", "4400", "4500", "799", "/", "27.6/40.0"],
    ]
    assert readme.excluded == [] and readme.notes == []


def test_readme_en_translates_headings_labels_and_rows() -> None:
    text = render_page(build_readme([make_result()]).page, "en")
    lines = lines_of(text)
    for expected in [
        "### nvidia configuration and run reference",
        "#### Environment",
        "- ##### Hardware environment",
        "    - Accelerator model: NVIDIA A100-SXM4-40GB",
        "- ##### Software environment",
        "   - OS version: Ubuntu 20.04.4 LTS",
        "   - Training framework version: pytorch-1.8.0a0+52ea372",
        "### Run results",
        "* General metrics",
        "* Performance metrics",
    ]:
        assert expected in lines, expected
    assert metric_cells(text) == [
        ["A100 1 node 8 cards (1x8)", "fp32", "/", "28000", "4400", "4500", "4600", "75.10%", "27.6/40.0"],
    ]


def test_readme_round_trips_through_the_parser() -> None:
    results = [make_result(), make_result(nnodes=2, fix_hp="bs=256,lr=0.8", e2e_time=None, acc=None)]
    page = build_readme(results).page
    parsed = parse_page(render_page(page), "README.md")
    assert [row.cells() for row in parsed.metric_rows] == [row.cells() for row in page.metric_rows]
    assert [(row.nnodes, row.nproc, row.fix_hp) for row in parsed.metric_rows] == [(1, 8, "/"), (2, 8, "bs=256,lr=0.8")]
    assert parsed.metric_rows[0].p_core.value == 4600
    assert parsed.software.framework == "pytorch-1.8.0a0+52ea372"
    assert parsed.software.dependencies == {"cuda": "11.2", "cudnn": "8100", "nccl": "2.8.4"}
    assert parsed.hardware.accelerator_model == "NVIDIA A100-SXM4-40GB"
    assert parsed.general_metrics is not None and parsed.general_metrics.get("模型") == "resnet50"


def test_readme_leaves_failed_runs_out_unless_asked() -> None:
    failed = make_result(status="failed", run_id="20261125-000000-ffffff", nproc=1)
    readme = build_readme([make_result(), failed])
    assert [row.config_name for row in readme.page.metric_rows] == ["1x8"]
    assert [result.run_id for result in readme.excluded] == ["20261125-000000-ffffff"]
    included = build_readme([make_result(), failed], include_failed=True)
    assert [row.cells()[3:] for row in included.page.metric_rows][1] == ["/"] * 6
    assert included.excluded == []


def test_readme_takes_the_framework_from_the_training_processes_and_dependencies_none() -> None:
    # a run's host capture has no framework (python=None): the world event has torch
    host = a100_host(framework=FrameworkVersions())
    result = make_result(env=host, synthetic=True)
    result.nodes = [NodeOutcome(host="node1", node_rank=0, container="c", exit_code=0,
                                log_dir="/nonexistent/logs", last_lines=[WORLD_LINE])]
    text = render_page(build_readme([result]).page)
    assert "   - 训练框架版本：pytorch-2.14.1+cu130" in lines_of(text)
    assert "   - 依赖软件版本：无" in lines_of(text)
    assert "| 数据集 " in text and "ImageNet2012 (synthetic)" in text


def test_readme_with_a_reference_page_takes_its_wording() -> None:
    reference = read_page(PAGES / "nvidia-bigtransfer.md")
    page = build_readme([make_result()], reference).page
    text = render_page(page)
    lines = lines_of(text)
    assert "### Nvidia GPU配置与运行信息参考" in lines  # nvidia pins the page's framework: its title
    assert page.preamble == reference.preamble
    assert page.acc_header == "final_acc1"
    general = {split_table_row(line)[0]: split_table_row(line)[1] for line in lines if line.startswith("| ")}
    assert general["模型"] == "Big Transfer"
    assert general["数据集"] == "Imagenet2012 1K"
    assert general["任务类别"] == "Image Classification && Representation Learning"
    assert general["硬件设备简称"] == "nvidia A100"
    # the reference writes (1x8) with ASCII parentheses: so does ours
    assert metric_cells(text)[0][0] == "A100单机8卡(1x8)"
    assert "训练精度来源" not in text  # the reference's notes are about its runs, not ours


def test_readme_refuses_mixed_cases() -> None:
    other = make_result().model_copy(update={"case": "vit"})
    with pytest.raises(UserError, match="one case on one vendor"):
        build_readme([make_result(), other])


# --------------------------------------------------------------------------- pins


@pytest.mark.parametrize(
    ("page_name", "vendor", "pins"),
    [
        ("nvidia-resnet50.md", "nvidia", {"ngc_tag": "21.02-py3"}),
        ("nvidia-vit.md", "nvidia", {"ngc_tag": "21.02-py3"}),
        ("kunlunxin-mobilenetv2.md", "kunlunxin", {"base_image": "pytorch1.12.1-cpu-ubuntu18.04:v0.04"}),
        ("iluvatar-mobilenetv2.md", "iluvatar", {"base_image": "corex:3.1.0"}),
    ],
)
def test_pins_of_the_reference_pages(page_name: str, vendor: str, pins: dict[str, str]) -> None:
    page = read_page(PAGES / page_name)
    assert framework_pins(page, load_vendor(vendor), page_name) == pins


def test_unknown_pin_names_the_page_the_field_and_the_known_pins() -> None:
    page = read_page(PAGES / "nvidia-resnet50.md")
    with pytest.raises(UserError) as raised:
        framework_pins(page, load_vendor("cpu"), "page.md")
    message = str(raised.value)
    assert message.startswith("page.md: 训练框架版本: framework 'pytorch-1.8.0a0+52ea372' has no pin")
    assert "Dockerfiles/cpu/vendor.yaml" in message and "known pins there: none" in message
    assert "VENDOR=nvidia pins it" in message

    page.software.entries = [entry.model_copy(update={"value": "pytorch-9.9"}) if entry.key == "framework"
                             else entry for entry in page.software.entries]
    with pytest.raises(UserError) as raised:
        framework_pins(page, load_vendor("nvidia"), "page.md")
    assert "known pins there: pytorch-1.8.0a0+52ea372" in str(raised.value)
    assert "add it to framework_pins in Dockerfiles/nvidia/vendor.yaml" in str(raised.value)


# --------------------------------------------------------------------------- the check before a run


def inventory_file(tmp_path: Path, hosts: int = 1) -> Path:
    data = {"hosts": [{"name": f"node{i + 1}", "address": "127.0.0.1", "transport": "local", "devices": 8,
                       "work_dir": str(tmp_path / "work")} for i in range(hosts)]}
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def nvidia_job(overrides: dict[str, str] | None = None) -> Job:
    pins = framework_pins(read_page(PAGES / "nvidia-resnet50.md"), load_vendor("nvidia"), "page")
    return make_job("resnet50", "nvidia", "A100", "1x8", fix_hp="bs=256,lr=0.8",
                    template_overrides={**pins, **(overrides or {})}, run_id="20261125-000000-cccccc")


class StandInBackend(FakeBackend):
    """Plans as the Docker backend does; any step past the environment check fails the test."""

    def __init__(self, environments: dict[str, EnvironmentInfo]) -> None:
        super().__init__([])
        self.environments = environments

    @property
    def steps(self) -> list[str]:
        return [name for name, _ in self.calls]

    def environment(self, plan: RunPlan) -> dict[str, EnvironmentInfo]:
        self.calls.append(("environment", ()))
        return self.environments

    def _started(self, step: str) -> None:
        self.calls.append((step, ()))
        raise AssertionError(f"{step} ran although the environment check refused the run")

    def start_monitors(self, plan: RunPlan, dest: Path) -> None:
        self._started("start_monitors")

    def prepare_image(self, plan: RunPlan) -> str:
        self._started("prepare_image")
        return ""

    def launch(self, plan: RunPlan) -> None:
        self._started("launch")


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def gate_for(allow_drift: bool, console: Console | None = None) -> EnvironmentGate:
    page = read_page(PAGES / "nvidia-resnet50.md")
    return EnvironmentGate(page, "nvidia-resnet50.md", allow_drift, console or quiet())


def test_gate_passes_a_host_that_matches_the_page(tmp_path: Path) -> None:
    inventory = load_inventory(inventory_file(tmp_path))
    backend = StandInBackend({})
    plan = build_plan(nvidia_job(), inventory, backend)
    gate = gate_for(allow_drift=False)
    gate(plan, {"node1": a100_host()})
    assert gate.drifted_fields == []
    fields = {row.field: row for row in gate.reports[0].rows}
    assert fields["framework"].matches is True and "ngc_tag=21.02-py3" in fields["framework"].actual
    assert fields["driver"].matches and fields["os"].matches and fields["kernel"].matches
    assert fields["device_memory_gib"].matches and fields["accelerator_model"].matches
    # the machine name differs from the page's (NVIDIA_A100-SXM4-40GB) but is not checked
    assert fields["machine_model"].matches is False


def test_gate_refuses_drift_before_anything_is_built(tmp_path: Path) -> None:
    inventory = load_inventory(inventory_file(tmp_path))
    backend = StandInBackend({"node1": a100_host(accelerator_driver="535.104.05", docker_version="24.0.7")})
    output = io.StringIO()
    gate = gate_for(allow_drift=False, console=Console(file=output, width=200))
    with pytest.raises(UserError) as raised:
        run_job(nvidia_job(), inventory, backend, tmp_path / "results", quiet(), check_environment=gate)
    message = str(raised.value)
    assert message.startswith("nvidia-resnet50.md: the hosts' environment drifts from the page in docker_version, driver")
    assert "ALLOW_DRIFT=1" in message and "nothing was started" in message
    assert backend.steps == ["preflight", "allocate", "environment", "release"]  # no image, no container
    table = output.getvalue()
    assert "535.104.05" in table and "470.129.06" in table and "drift" in table
    assert not (tmp_path / "results").exists()


def test_gate_with_allow_drift_warns_and_keeps_the_drift(tmp_path: Path) -> None:
    inventory = load_inventory(inventory_file(tmp_path))
    plan = build_plan(nvidia_job(), inventory, StandInBackend({}))
    output = io.StringIO()
    gate = gate_for(allow_drift=True, console=Console(file=output, width=200))
    gate(plan, {"node1": a100_host(kernel="5.15.0-91-generic x86_64")})
    assert gate.drifted_fields == ["kernel"]
    assert "warning:" in output.getvalue() and "--allow-drift" in output.getvalue()


def test_gate_sees_a_param_that_overrides_the_pin(tmp_path: Path) -> None:
    inventory = load_inventory(inventory_file(tmp_path))
    plan = build_plan(nvidia_job({"ngc_tag": "22.01-py3"}), inventory, StandInBackend({}))
    gate = gate_for(allow_drift=True)
    gate(plan, {"node1": a100_host()})
    assert gate.drifted_fields == ["framework"]
    row = next(row for row in gate.reports[0].rows if row.field == "framework")
    assert row.actual == "image built with ngc_tag=22.01-py3, the pin is ngc_tag=21.02-py3"


def test_host_drift_without_an_accelerator_on_the_page_skips_device_memory() -> None:
    host = a100_host(accelerator_model="unknown", accelerator_memory_mib=None)
    page = build_readme([make_result(env=host)]).page  # mem column 27.6/40.0, no accelerator named
    report = host_drift(page, host, None)
    assert "device_memory_gib" not in {row.field for row in report.rows}
    assert report.drifted == []


# --------------------------------------------------------------------------- the comparison after a run


def test_comparison_p_core_twice_the_page_is_ratio_2() -> None:
    page = read_page(PAGES / "nvidia-resnet50.md")
    result = make_result(nproc=1, fix_hp="bs=256,lr=0.8", p_core=1598.0, p_train=795.0, p_whole=None,
                         e2e_time=1000.0, acc=None, mem_used_gib=55.2)
    comparison = compare(result, page, "nvidia-resnet50.md")
    assert comparison.page_row == "A100单机单卡（1x1）"
    rows = {row.column: row for row in comparison.rows}
    assert (rows["p_core"].page, rows["p_core"].ours, rows["p_core"].ratio_text) == ("799", "1598", "2.00")
    assert rows["p_train"].ratio_text == "1.00"
    assert rows["p_whole"].ratio is None  # ours is /
    assert rows["e2e_time"].ratio is None and rows["e2e_time"].page == ""  # the page's cell is empty
    assert rows["acc"].ratio is None
    assert (rows["mem"].page, rows["mem"].ratio_text) == ("27.6/40.0", "2.00")
    markdown = comparison_markdown(comparison).splitlines()
    assert split_table_row(markdown[0]) == ["column", "page", "ours", "ours/page"]
    assert split_table_row(markdown[5]) == ["p_core", "799", "1598", "2.00"]


@pytest.mark.parametrize("page_name", PAGE_NAMES)
def test_comparison_against_every_reference_page_row(page_name: str) -> None:
    page = read_page(PAGES / page_name)
    for row in page.metric_rows:
        doubled = {column: 2 * cell.value if cell.value is not None else None
                   for column, cell in (("e2e_time", row.e2e_time), ("p_whole", row.p_whole),
                                        ("p_train", row.p_train), ("p_core", row.p_core))}
        result = make_result(nnodes=row.nnodes, nproc=row.nproc, fix_hp=row.fix_hp,
                             acc=row.acc.percent, mem_used_gib=row.mem.used_gib, **doubled)
        comparison = compare(result, page, page_name)
        chosen = pick_row(page, row.nnodes, row.nproc, row.fix_hp)
        assert chosen is row and comparison.page_row == row.config
        for compared in comparison.rows:
            if compared.page.strip() in ("", "/"):
                assert compared.ratio is None, (row.config, compared)
            elif compared.column in ("acc", "mem"):
                assert compared.ratio == pytest.approx(1.0), (row.config, compared)
            else:
                assert compared.ratio == pytest.approx(2.0), (row.config, compared)


def test_row_choice_by_config_and_fix_hp() -> None:
    page = read_page(PAGES / "nvidia-resnet50.md")
    assert pick_row(page, 1, 8, "bs=256,lr=0.8").p_core.value == 6105  # type: ignore[union-attr]
    assert pick_row(page, 1, 8, "lr=0.8,bs=256").p_core.value == 6105  # type: ignore[union-attr]
    assert pick_row(page, 1, 8, "/").p_core.value == 4659  # type: ignore[union-attr]
    assert pick_row(page, 1, 8, "bs=64").p_core.value == 4659  # type: ignore[union-attr]
    assert pick_row(page, 1, 2, "/") is None
    comparison = compare(make_result(nproc=2), page, "p.md")
    assert comparison.page_row is None and all(row.ratio is None for row in comparison.rows)
    assert comparison.notes == ["the page has no row for 1x2: nothing to compare with"]
    comparison = compare(make_result(fix_hp="bs=64"), page, "p.md")
    assert "compared with its first 1x8 row (fix_hp /)" in comparison.notes[0]


def test_record_reference_writes_reference_md_and_results_json(tmp_path: Path) -> None:
    inventory = load_inventory(inventory_file(tmp_path))
    plan = build_plan(nvidia_job(), inventory, StandInBackend({}))
    page = read_page(PAGES / "nvidia-resnet50.md")
    gate = gate_for(allow_drift=True)
    gate(plan, {"node1": a100_host(accelerator_driver="535.104.05")})
    result = make_result(nproc=8, fix_hp="bs=256,lr=0.8", p_core=12210.0)
    out_dir = tmp_path / "run"
    updated, comparison = record_reference(result, page, "nvidia-resnet50.md", {"ngc_tag": "21.02-py3"},
                                           gate, out_dir)
    assert comparison.page_row == "A100单机8卡（1x8）" and comparison.page_fix_hp == "bs=256,lr=0.8"
    stored = RunResult.model_validate_json((out_dir / "results.json").read_text(encoding="utf-8"))
    assert stored.reference == json.loads(json.dumps(updated.reference))
    assert stored.reference["page"] == "nvidia-resnet50.md"
    assert stored.reference["pins"] == {"ngc_tag": "21.02-py3"}
    assert stored.reference["allow_drift"] is True and stored.reference["drifted_fields"] == ["driver"]
    driver = next(row for row in stored.reference["drift"]["node1"] if row["field"] == "driver")
    assert driver == {"field": "driver", "expected": "470.129.06", "actual": "535.104.05", "matches": False}
    p_core = next(row for row in stored.reference["comparison"]["rows"] if row["column"] == "p_core")
    assert (p_core["page"], p_core["ours"], p_core["ratio"]) == ("6105", "12210", 2.0)
    markdown = (out_dir / "reference.md").read_text(encoding="utf-8").splitlines()
    assert markdown[0] == "# Run 20261125-000000-aaaaaa vs nvidia-resnet50.md"
    assert "- page row: A100单机8卡（1x8） (fix_hp bs=256,lr=0.8)" in markdown
    assert ["p_core", "6105", "12210", "2.00"] in [split_table_row(line) for line in markdown if line.startswith("|")]
    assert "## Environment vs the page (drift in driver, run with --allow-drift)" in markdown


def test_bad_page_is_a_user_error_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    text = (PAGES / "nvidia-resnet50.md").read_text(encoding="utf-8").replace("| 28661 |", "| 2x8661 |")
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as raised:
        read_page(bad)
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "2x8661" in row)
    assert str(raised.value).startswith(f"{bad}: line {line}: e2e_time cell '2x8661' is not a number")
    with pytest.raises(UserError, match="cannot read the vendor page"):
        read_page(tmp_path / "missing.md")


def test_every_reference_page_is_pinned_by_exactly_its_vendor() -> None:
    for name in PAGE_NAMES:
        vendor = vendor_for_page(read_page(PAGES / name))
        assert vendor is not None and vendor.name == name.split("-")[0], name
