"""The vendor README page: the five reference pages parse, re-render cell for
cell and round-trip; variants the pages do not show are built here."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.results import Metrics, RunResult
from harness.errors import UserError
from harness.pages.cells import (
    config_label,
    format_acc,
    format_e2e_time,
    format_mem,
    format_throughput,
    parse_config_label,
)
from harness.pages.env_section import HardwareEnv, SoftwareEnv
from harness.pages.model import MetricRow, VendorPage
from harness.pages.parse import parse_page, split_table_row
from harness.pages.readme import page_from_results
from harness.pages.render import render_metric_table, render_page
from harness.pages.repro import env_spec_from_page
from harness.pages.rows import row_from_result

# The five published vendor pages (their source: SOURCE.txt there).
REFERENCE_DIR = Path(__file__).parent / "fixtures" / "vendor_pages"
PAGE_NAMES = [
    "iluvatar-mobilenetv2.md",
    "kunlunxin-mobilenetv2.md",
    "nvidia-bigtransfer.md",
    "nvidia-resnet50.md",
    "nvidia-vit.md",
]


def load(name: str) -> tuple[str, VendorPage]:
    path = REFERENCE_DIR / name
    text = path.read_text(encoding="utf-8")
    return text, parse_page(text, str(path))


def source_metric_cells(text: str) -> tuple[list[str], list[list[str]]]:
    """The 性能指标 table straight from the page text, independent of the parser."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("| 配置"))
    table = []
    for line in lines[start:]:
        if not line.strip().startswith("|"):
            break
        table.append(split_table_row(line))
    return table[0], [row for row in table[2:]]


# --------------------------------------------------------------------------- the five pages


def test_resnet50_page() -> None:
    _, page = load("nvidia-resnet50.md")
    assert page.title == "2. Nvidia GPU配置与运行信息参考"
    assert page.vendor == "Nvidia GPU"
    assert page.preamble.startswith("### 1. 数据集准备")
    # one combined line for machine and accelerator
    assert page.hardware.entries[0].label == "机器、加速卡型号"
    assert page.hardware.machine_model == page.hardware.accelerator_model == "NVIDIA_A100-SXM4-40GB"
    assert page.hardware.cpu_model is None
    assert (page.hardware.network_type, page.hardware.network_rate) == ("InfiniBand", "200Gb/s")
    software = page.software
    assert (software.os, software.kernel, software.driver) == ("Ubuntu 20.04", "5.4.0-113-generic", "470.129.06")
    assert software.docker_version == "20.10.16"
    assert software.framework == "pytorch-1.8.0a0+52ea372"
    assert software.dependencies == {"cuda": "11.4"}
    assert page.acc_header == "acc"
    assert [row.config_name for row in page.metric_rows] == ["1x8", "1x8", "1x1", "2x8"]
    first, tuned, single, two_nodes = page.metric_rows
    assert first.config == "A100单机8卡（1x8）" and first.accelerator == "A100"
    assert first.fix_hp == "/" and first.fix_hp_params == {}
    assert first.e2e_time.value == 28661 and first.p_whole.value == 4475 and first.p_core.value == 4659
    assert (first.acc.text, first.acc.percent, first.acc.form) == ("75.0%", 75.0, "percent_sign")
    assert (first.mem.used_gib, first.mem.total_gib) == (5.8, 40.0)
    assert tuned.fix_hp_params == {"bs": "256", "lr": "0.8"}
    assert single.e2e_time.text == "" and single.e2e_time.value is None and single.acc.percent is None
    assert (two_nodes.accelerator, two_nodes.nnodes, two_nodes.nproc) == ("A100", 2, 8)
    assert two_nodes.p_core.value == 11874 and two_nodes.p_train.value == 11085
    assert two_nodes.mem.text == "27.9/40.0"
    assert page.general_metrics is not None and page.general_metrics.get("模型") == "resnet50"
    assert page.general_metrics.get("计算吞吐量") == "**p_core,见“性能指标”**"


def test_iluvatar_page() -> None:
    _, page = load("iluvatar-mobilenetv2.md")
    assert page.vendor == "天数智芯 BI-V100 GPU"
    assert page.hardware.accelerator_model == "Iluvatar BI-V100 32GB"
    cpu = page.hardware.entry("cpu_model")
    assert cpu is not None and (cpu.label, cpu.separator) == ("CPU 型号", "：")
    assert page.hardware.cpu_model == "Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz"
    assert page.software.kernel == "5.4.0-148-generic x86_64"
    assert page.software.framework == "torch-1.13.1+corex.3.1.0"
    assert page.software.dependencies == {}
    rows = page.metric_rows
    assert rows[0].e2e_time.value == 174534 and rows[0].acc.percent == 68.52
    assert (rows[1].mem.text, rows[1].mem.used_gib, rows[1].mem.total_gib) == ("21.6 / 32.0", 21.6, 32.0)
    # the label says 单机8卡 but (1x1) is the truth
    assert rows[2].config == "BI-V100单机8卡（1x1）"
    assert (rows[2].accelerator, rows[2].nnodes, rows[2].nproc) == ("BI-V100", 1, 1)
    assert rows[2].p_whole.value == 624
    assert (rows[3].nnodes, rows[3].nproc, rows[3].p_core.value) == (2, 8, 7219)


def test_kunlunxin_page() -> None:
    _, page = load("kunlunxin-mobilenetv2.md")
    assert page.vendor == "昆仑芯XPU"
    assert page.hardware.machine_model == "昆仑芯AI加速器组R480-X8"
    assert page.hardware.accelerator_model == "昆仑芯AI加速卡R300"
    assert page.software.docker_version is None
    assert page.software.docker_image == "pytorch1.12.1-cpu-ubuntu18.04:v0.04"
    assert page.software.framework == "xmlir+e70db8f6"
    assert page.software.dependencies == {"pytorch": "1.12.1+cpu"}
    single, eight, two = page.metric_rows
    assert (single.accelerator, single.nnodes, single.nproc) == ("R300", 1, 1)
    assert single.e2e_time.text == "/" and single.p_whole.text == "" and single.p_whole.value is None
    assert eight.e2e_time.text == "" and eight.acc.percent == 68.43
    assert (two.accelerator, two.nnodes, two.fix_hp) == ("R300", 2, "bs=256,lr=0.72")
    assert two.mem.text == "26.7/32.0"
    assert page.trailing == "### 许可证\n\nApache 2.0 license。"


def test_bigtransfer_page() -> None:
    _, page = load("nvidia-bigtransfer.md")
    assert page.acc_header == "final_acc1"
    assert page.hardware.machine_model == "NVIDIA DGX A100(40G)"  # trailing space dropped
    assert page.hardware.cpu_model == "AMD EPYC7742-64core@1.5G"
    assert page.software.kernel == "5.4.0-113-generic"
    first, _, single, two = page.metric_rows
    assert first.config == "A100单机8卡(1x8)"
    assert (first.acc.text, first.acc.percent, first.acc.form) == ("0.84192", 84.192, "fraction")
    assert first.acc.note is not None and "fraction" in first.acc.note
    assert single.p_whole.value == 23.1 and single.p_whole.text == "23.1"
    assert (two.nnodes, two.nproc, two.p_core.value) == (2, 8, 470)
    assert "训练精度来源" in page.trailing


def test_vit_page() -> None:
    _, page = load("nvidia-vit.md")
    first = page.metric_rows[0]
    assert (first.acc.text, first.acc.percent, first.acc.form) == ("80.024", 80.024, "percent_number")
    assert first.mem.text == "39.3/40.0"
    assert page.general_metrics is not None
    assert page.general_metrics.get("训练结果") == "val_loss,见“性能指标”"
    assert page.general_metrics.header == ["指标名称", "指标值", "特殊说明"]


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_metric_table_reproduces_every_cell(name: str) -> None:
    text, page = load(name)
    header, rows = source_metric_cells(text)
    rendered = render_metric_table(page.metric_rows, page.acc_header).splitlines()
    assert split_table_row(rendered[0]) == header
    assert [split_table_row(line) for line in rendered[2:]] == rows


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_page_round_trip(name: str) -> None:
    _, page = load(name)
    rendered = render_page(page)
    again = parse_page(rendered, f"rendered {name}")
    assert again == page
    assert render_page(again) == rendered


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_english_rendering(name: str) -> None:
    _, page = load(name)
    english = render_page(page, lang="en")
    assert "#### Environment" in english and "- ##### Hardware environment" in english
    assert "* Performance metrics" in english and "| Config" in english
    assert "配置与运行信息参考" not in english
    again = parse_page(english, f"english {name}")
    assert [(r.accelerator, r.nnodes, r.nproc) for r in again.metric_rows] == [
        (r.accelerator, r.nnodes, r.nproc) for r in page.metric_rows
    ]
    assert [r.cells()[1:] for r in again.metric_rows] == [r.cells()[1:] for r in page.metric_rows]
    assert again.hardware.accelerator_model == page.hardware.accelerator_model
    assert again.software.kernel == page.software.kernel
    assert again.software.dependencies == page.software.dependencies


def test_english_labels() -> None:
    _, page = load("nvidia-resnet50.md")
    english = render_page(page, lang="en")
    assert "| A100 1 node 8 cards (1x8)" in english
    assert "| A100 1 node 1 card (1x1)" in english
    assert "| A100 2 nodes 8 cards (2x8)" in english
    assert "### 2. Nvidia GPU configuration and run reference" in english
    assert "Machine and accelerator model: NVIDIA_A100-SXM4-40GB" in english
    assert "Compute throughput" in english


def test_env_spec_from_pages() -> None:
    _, resnet = load("nvidia-resnet50.md")
    spec = env_spec_from_page(resnet)
    assert spec["driver"] == "470.129.06"
    assert spec["os"] == "Ubuntu 20.04"
    assert spec["device_memory_gib"] == 40.0
    assert spec["dependencies"] == {"cuda": "11.4"}
    assert spec["accelerator_model"] == "NVIDIA_A100-SXM4-40GB"
    _, iluvatar = load("iluvatar-mobilenetv2.md")
    assert env_spec_from_page(iluvatar)["device_memory_gib"] == 32.0
    _, kunlunxin = load("kunlunxin-mobilenetv2.md")
    kunlunxin_spec = env_spec_from_page(kunlunxin)
    assert kunlunxin_spec["device_memory_gib"] == 32.0  # from the mem column: R300 has no size in its name
    assert kunlunxin_spec["docker_image"] == "pytorch1.12.1-cpu-ubuntu18.04:v0.04"


# --------------------------------------------------------------------------- labels and formatting


def test_config_labels() -> None:
    assert config_label("A100", 1, 8) == "A100单机8卡（1x8）"
    assert config_label("A100", 1, 1) == "A100单机单卡（1x1）"
    assert config_label("A100", 2, 8) == "A100两机8卡（2x8）"
    assert config_label("A100", 4, 8) == "A1004机8卡（4x8）"
    assert config_label("A100", 1, 8, "ascii") == "A100单机8卡(1x8)"
    assert config_label("A100", 1, 8, "en") == "A100 1 node 8 cards (1x8)"
    assert config_label("A100", 2, 1, "en") == "A100 2 nodes 1 card (2x1)"
    for nnodes, nproc in ((1, 1), (1, 8), (2, 8), (4, 8)):
        for style in ("fullwidth", "ascii", "en"):
            assert parse_config_label(config_label("BI-V100", nnodes, nproc, style)) == ("BI-V100", nnodes, nproc)


def test_cell_formatting() -> None:
    assert format_throughput(4475.4) == "4475"
    assert format_throughput(23.14) == "23.1"
    assert format_throughput(None) == "/"
    assert format_e2e_time(28660.6) == "28661"
    assert format_acc(75.5) == "75.50%"
    assert format_acc(None) == "/"
    assert format_mem(27.56, 40.0) == "27.6/40.0"
    assert format_mem(None, 40.0) == "/"


# --------------------------------------------------------------------------- variants built here


def test_amp_and_bf16_rows_round_trip() -> None:
    rows = [
        MetricRow.from_values(
            accelerator="A100", nnodes=1, nproc=8, precision="amp", fix_hp="bs=512", e2e_time=1500.4,
            p_whole=9000.2, p_train=9100.7, p_core=9500.0, acc_percent=76.125, mem_used_gib=35.04, mem_total_gib=40.0,
        ),
        MetricRow.from_values(
            accelerator="A100", nnodes=2, nproc=8, precision="bf16", p_whole=17000, p_train=17500, p_core=18000,
            mem_used_gib=30.0, mem_total_gib=40.0,
        ),
    ]
    table = render_metric_table(rows)
    cells = [split_table_row(line) for line in table.splitlines()[2:]]
    assert cells[0] == ["A100单机8卡（1x8）", "amp", "bs=512", "1500", "9000", "9101", "9500", "76.13%", "35.0/40.0"]
    assert cells[1] == ["A100两机8卡（2x8）", "bf16", "/", "/", "17000", "17500", "18000", "/", "30.0/40.0"]
    page = VendorPage(title="Nvidia GPU配置与运行信息参考", metric_rows=rows)
    again = parse_page(render_page(page), "amp-bf16")
    assert [row.precision for row in again.metric_rows] == ["amp", "bf16"]
    assert again.metric_rows[0].acc.percent == 76.13
    assert again.metric_rows[1].e2e_time.value is None


def test_extra_hardware_fields_and_nested_dependencies() -> None:
    text = """### 某厂商 XPU配置与运行信息参考
#### 环境配置
- ##### 硬件环境
    - 机器型号: Server X
    - 加速卡型号: Card Y 64GB
    - 内存容量：1TB
    - CPU型号: Some CPU
    - 多机网络类型、带宽: RoCE，100Gb/s
- ##### 软件环境
   - OS版本：Ubuntu 22.04
   - 依赖软件版本：
     - cuda: 12.1
     - nccl: 2.18.3
       - plugin: aws-ofi 1.7
- ##### 并行策略
   - 并行技术：数据并行

### 运行情况

* 性能指标

| 配置 | precision | fix_hp | e2e_time | p_whole | p_train | p_core | acc | mem |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| Y单机8卡（1x8） | fp32 | / | / | 100 | 110 | 120 | / | 60.0/64.0 |
"""
    page = parse_page(text, "variant.md")
    assert page.hardware.extra_fields == {"内存容量": "1TB"}
    assert [entry.label for entry in page.hardware.entries] == ["机器型号", "加速卡型号", "内存容量", "CPU型号", "多机网络类型、带宽"]
    assert (page.hardware.network_type, page.hardware.network_rate) == ("RoCE", "100Gb/s")
    assert page.software.dependencies == {"cuda": "12.1", "nccl": "2.18.3", "nccl.plugin": "aws-ofi 1.7"}
    assert page.extra_environment == ["- ##### 并行策略\n   - 并行技术：数据并行"]
    assert parse_page(render_page(page), "again") == page
    assert "    - 内存容量：1TB" in render_page(page)
    assert "- 内存容量：1TB" in render_page(page, lang="en")  # uninterpreted labels stay as written


def test_inline_dependency_lists() -> None:
    software = SoftwareEnv.build(os="Ubuntu 20.04 LTS", dependencies={})
    assert software.dependencies == {}
    assert software.entry("dependencies").value == "无"  # type: ignore[union-attr]
    text = """### V配置与运行信息参考
#### 环境配置
- ##### 软件环境
   - 依赖软件版本：transformers==4.37.1,wandb>=0.15.7,hydra-core

### 运行情况
* 性能指标

| 配置 | precision | fix_hp | e2e_time | p_whole | p_train | p_core | acc | mem |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| V单机单卡(1x1) | fp32 | / | / | / | / | / | / | / |
"""
    page = parse_page(text, "inline.md")
    assert page.software.dependencies == {"transformers": "4.37.1", "wandb": ">=0.15.7", "hydra-core": ""}


def test_built_environment_round_trips() -> None:
    hardware = HardwareEnv.build(
        machine_model="NVIDIA DGX A100(40G)",
        accelerator_model="NVIDIA_A100-SXM4-40GB",
        cpu_model="AMD EPYC7742-64core@1.5G",
        network_type="InfiniBand",
        network_rate="200Gb/s",
        extra={"内存": "1TB"},
    )
    software = SoftwareEnv.build(
        os="Ubuntu 20.04", kernel="5.4.0-113-generic", driver="470.129.06", docker_version="20.10.16",
        framework="pytorch-1.8.0a0+52ea372", dependencies={"cuda": "11.4", "cudnn": "8.2.1"},
    )
    page = VendorPage(title="Nvidia GPU配置与运行信息参考", hardware=hardware, software=software)
    again = parse_page(render_page(page), "built")
    assert again.hardware == hardware and again.software == software
    assert again.software.dependencies == {"cuda": "11.4", "cudnn": "8.2.1"}
    combined = HardwareEnv.build(machine_model="X", accelerator_model="X")
    assert [entry.label for entry in combined.entries] == ["机器、加速卡型号"]


def test_empty_cells_stay_empty() -> None:
    text = """### E配置与运行信息参考
#### 环境配置
- ##### 硬件环境
    - 加速卡型号: E1
### 运行情况
* 性能指标
| 配置 | precision | fix_hp | e2e_time | p_whole | p_train | p_core | acc | mem |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| E1单机单卡（1x1） | fp32 |  |  |  |  |  |  |  |
"""
    page = parse_page(text, "empty.md")
    row = page.metric_rows[0]
    assert row.fix_hp == "" and row.p_core.value is None and row.acc.percent is None and row.mem.used_gib is None
    assert split_table_row(render_metric_table(page.metric_rows).splitlines()[2]) == ["E1单机单卡（1x1）", "fp32"] + [""] * 7


# --------------------------------------------------------------------------- malformed pages


GOOD_TABLE = """| 配置 | precision | fix_hp | e2e_time | p_whole | p_train | p_core | acc | mem |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| A100单机8卡（1x8） | fp32 | / | 100 | 1 | 2 | 3 | 75.0% | 5.8/40.0 |
"""


def _error(text: str) -> UserError:
    with pytest.raises(UserError) as caught:
        parse_page(text, "pages/bad.md")
    return caught.value


def test_missing_performance_table_names_file_and_line() -> None:
    error = _error("### X配置与运行信息参考\n#### 环境配置\n- ##### 硬件环境\n    - 加速卡型号: X\n### 运行情况\n* 通用指标\n")
    assert error.file == "pages/bad.md"
    assert "pages/bad.md: line 6" in str(error) and "性能指标" in str(error)
    assert error.exit_code == 2


def test_row_with_wrong_number_of_cells() -> None:
    text = "### 运行情况\n\n* 性能指标\n\n" + GOOD_TABLE + "| A100两机8卡（2x8） | fp32 | / | 100 | 1 | 2 | 3 | 5.8/40.0 |\n"
    error = _error(text)
    assert "line 8" in str(error) and "expected 9 cells" in str(error) and "found 8" in str(error)


def test_bad_header_bad_cells_bad_label() -> None:
    assert "line 3" in str(_error("### 运行情况\n* 性能指标\n| 配置 | precision | fix_hp | p_core |\n|---|---|---|---|\n"))
    bad_mem = GOOD_TABLE.replace("5.8/40.0", "lots")
    assert "line 3" in str(_error(bad_mem)) and "mem" in str(_error(bad_mem))
    bad_number = GOOD_TABLE.replace("| 1 | 2 |", "| fast | 2 |")
    assert "p_whole" in str(_error(bad_number))
    no_config = GOOD_TABLE.replace("A100单机8卡（1x8）", "A100单机8卡")
    assert "(NxP)" in str(_error(no_config)) and "line 3" in str(_error(no_config))
    bad_general = "### 运行情况\n* 通用指标\n| 指标名称 | 指标值 | 特殊说明 |\n|---|---|---|\n| 模型 | x |\n* 性能指标\n" + GOOD_TABLE
    assert "line 5" in str(_error(bad_general))


# --------------------------------------------------------------------------- from the harness's runs


def _run(config: tuple[int, int], status: str = "success", **metrics: float | None) -> RunResult:
    nnodes, nproc = config
    return RunResult(
        run_id=f"run-{nnodes}x{nproc}",
        case="resnet50",
        vendor="nvidia",
        accelerator="A100",
        nnodes=nnodes,
        nproc_per_node=nproc,
        precision="amp",
        fix_hp="bs=256,lr=0.8" if nproc > 1 else "/",
        status=status,
        metrics=Metrics(**metrics) if metrics else None,
    )


def test_page_from_results() -> None:
    results = [
        _run((1, 8), e2e_time=22652.7, p_whole=5663.2, p_train=5866.4, p_core=6105.1, acc=75.5, mem_used_gib=28.31, mem_total_gib=40.0),
        _run((1, 1), p_whole=23.14, p_train=29.5, p_core=29.84, mem_used_gib=27.6, mem_total_gib=40.0),
        _run((2, 8), p_whole=10576, p_train=11085, p_core=11874, mem_used_gib=27.9, mem_total_gib=40.0),
        _run((2, 8), status="failed"),
    ]
    hardware = HardwareEnv.build(machine_model="NVIDIA_A100-SXM4-40GB", accelerator_model="NVIDIA_A100-SXM4-40GB",
                                 network_type="InfiniBand", network_rate="200Gb/s")
    software = SoftwareEnv.build(os="Ubuntu 20.04", driver="470.129.06", dependencies={"cuda": "11.4"})
    page = page_from_results(results, hardware, software, "resnet50", "ImageNet2012")
    assert page.title == "nvidia 配置与运行信息参考"
    assert page.general_metrics is not None and page.general_metrics.get("模型") == "resnet50"
    assert page.general_metrics.get("硬件设备简称") == "A100"
    cells = [row.cells() for row in page.metric_rows]
    assert cells == [
        ["A100单机8卡（1x8）", "amp", "bs=256,lr=0.8", "22653", "5663", "5866", "6105", "75.50%", "28.3/40.0"],
        ["A100单机单卡（1x1）", "amp", "/", "/", "23.1", "29.5", "29.8", "/", "27.6/40.0"],
        ["A100两机8卡（2x8）", "amp", "bs=256,lr=0.8", "/", "10576", "11085", "11874", "/", "27.9/40.0"],
    ]
    assert page.metric_rows[2].p_core.value == 11874
    again = parse_page(render_page(page), "from-results")
    # the printed page holds the rounded numbers; everything else comes back as built
    assert [row.cells() for row in again.metric_rows] == cells
    assert again.hardware == hardware and again.software == software
    assert again.general_metrics == page.general_metrics
    assert render_page(again) == render_page(page)
    with_failed = page_from_results(results, hardware, software, "resnet50", "ImageNet2012", include_failed=True)
    assert with_failed.metric_rows[-1].cells()[3:] == ["/"] * 6
    assert row_from_result(results[1]).cells() == cells[1]
    assert row_from_result(results[1], label_style="ascii").cells()[0] == "A100单机单卡(1x1)"
    assert row_from_result(results[1]).cells(lang="en")[0] == "A100 1 node 1 card (1x1)"
