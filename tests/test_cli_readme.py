"""The reproduction commands as a user types them: `readme`, `env diff`,
`env capture` and `bench --repro` (dry run). Hosts are this machine through
`transport: local`; nothing here needs Docker or SSH."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import REPO_ROOT
from harness.core.results import Metrics, RunResult
from harness.hostinfo.model import EnvironmentInfo
from harness.pages.env_section import HardwareEnv, SoftwareEnv
from harness.pages.model import VendorPage
from harness.pages.parse import parse_page, split_table_row
from harness.pages.render import render_page

PAGES = Path(__file__).parent / "fixtures" / "vendor_pages"
GOLDEN_HOSTS = Path(__file__).parent / "golden" / "hosts_2x2.yaml"


def harness(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def local_hosts(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yaml"
    data = {"hosts": [{"name": "local1", "address": "127.0.0.1", "transport": "local", "devices": 1,
                       "work_dir": str(tmp_path / "work")}]}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def write_result(folder: Path, result: RunResult) -> Path:
    path = folder / result.run_id / result.case / result.config_name / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    return path


def a100_result(run_id: str, nnodes: int, nproc: int, fix_hp: str, status: str = "success",
                p_core: float = 4659.0) -> RunResult:
    env = EnvironmentInfo(
        host="node1", accelerator_model="NVIDIA A100-SXM4-40GB", accelerator_memory_mib=40960.0,
        accelerator_driver="470.129.06", os="Ubuntu 20.04.4 LTS", kernel="5.4.0-113-generic x86_64",
        docker_version="20.10.16", network_type="InfiniBand", network_rate="200Gb/s",
    )
    env.framework.torch = "1.8.0a0+52ea372"
    env.framework.cuda = "11.2"
    return RunResult(
        run_id=run_id, case="resnet50", vendor="nvidia", accelerator="A100", nnodes=nnodes,
        nproc_per_node=nproc, precision="fp32", fix_hp=fix_hp, status=status,
        failure=None if status == "success" else "node 1 (node2) exited 137\nkilled",
        metrics=Metrics(e2e_time=28661.2, p_whole=4475.4, p_train=4586.0, p_core=p_core, acc=75.04,
                        mem_used_gib=5.83, mem_total_gib=40.0) if status == "success" else None,
        environment={"node1": env.model_dump()},
    )


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    write_result(folder, a100_result("20261125-000000-000001", 1, 8, "/"))
    write_result(folder, a100_result("20261125-000000-000002", 1, 1, "bs=256,lr=0.8", p_core=799.0))
    write_result(folder, a100_result("20261125-000000-000003", 2, 8, "bs=256,lr=0.8", status="failed"))
    return folder


def performance_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith(("| 配置", "| Config")))
    return [split_table_row(line) for line in lines[start + 2:] if line.startswith("|")]


# --------------------------------------------------------------------------- readme


def test_readme_writes_the_page_and_names_excluded_runs(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "page" / "README.md"
    result = harness("readme", results_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    assert ("excluded failed run 20261125-000000-000003 (resnet50 nvidia 2x8): node 1 (node2) exited 137"
            in result.stderr)
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()
    for expected in ["### nvidia 配置与运行信息参考", "#### 环境配置", "- ##### 硬件环境",
                     "    - 加速卡型号: NVIDIA A100-SXM4-40GB", "    - 多机网络类型、带宽: InfiniBand，200Gb/s",
                     "- ##### 软件环境", "   - 加速卡驱动版本：470.129.06", "   - 训练框架版本：pytorch-1.8.0a0+52ea372",
                     "   - 依赖软件版本：", "     - cuda: 11.2", "### 运行情况", "* 通用指标", "* 性能指标"]:
        assert expected in lines, expected
    assert performance_rows(text) == [
        ["A100单机8卡（1x8）", "fp32", "/", "28661", "4475", "4586", "4659", "75.04%", "5.8/40.0"],
        ["A100单机单卡（1x1）", "fp32", "bs=256,lr=0.8", "28661", "4475", "4586", "799", "75.04%", "5.8/40.0"],
    ]
    # round trip: the written page parses back into the same rows
    page = parse_page(text, str(out))
    assert [(row.config, row.nnodes, row.nproc, row.fix_hp, row.p_core.value) for row in page.metric_rows] == [
        ("A100单机8卡（1x8）", 1, 8, "/", 4659.0), ("A100单机单卡（1x1）", 1, 1, "bs=256,lr=0.8", 799.0)]
    assert page.software.framework == "pytorch-1.8.0a0+52ea372"


def test_readme_english_to_stdout(results_dir: Path) -> None:
    result = harness("readme", results_dir, "--lang", "en")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in ["#### Environment", "- ##### Hardware environment", "- ##### Software environment",
                     "   - Training framework version: pytorch-1.8.0a0+52ea372", "* General metrics",
                     "* Performance metrics"]:
        assert expected in lines, expected
    assert [row[0] for row in performance_rows(result.stdout)] == ["A100 1 node 8 cards (1x8)",
                                                                  "A100 1 node 1 card (1x1)"]


def test_readme_with_reference_uses_its_wording(results_dir: Path) -> None:
    result = harness("readme", results_dir, "--reference", PAGES / "nvidia-vit.md", "--include-failed")
    assert result.returncode == 0, result.stderr
    assert "excluded" not in result.stderr
    lines = result.stdout.splitlines()
    assert "### Nvidia GPU配置与运行信息参考" in lines
    assert lines[0] == "### 测试数据集下载"
    cells = [split_table_row(line) for line in lines if line.startswith("| ")]
    assert ["模型", "Vision Transformer", ""] in cells
    assert ["数据集", "Imagenet2012 1K", ""] in cells
    assert cells[[row[0] for row in cells].index("配置")][7] == "final_acc1"
    assert [row[0] for row in performance_rows(result.stdout)] == ["A100单机8卡(1x8)", "A100单机单卡(1x1)",
                                                                  "A100两机8卡(2x8)"]


def test_readme_bad_input_exits_2(tmp_path: Path, results_dir: Path) -> None:
    missing = harness("readme", tmp_path / "nothing-here")
    assert missing.returncode == 2 and f"{tmp_path / 'nothing-here'}: no such file or folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = harness("readme", tmp_path / "empty")
    assert empty.returncode == 2 and "no results.json found" in empty.stderr
    bad = tmp_path / "bad.md"
    bad.write_text("### x\n* 性能指标\n\n| 配置 | precision |\n| -- | -- |\n", encoding="utf-8")
    result = harness("readme", results_dir, "--reference", bad)
    assert result.returncode == 2
    assert f"{bad}: line 4: the 性能指标 header must be" in result.stderr


# --------------------------------------------------------------------------- env


def test_env_capture_prints_json(tmp_path: Path) -> None:
    result = harness("env", "capture", "--hosts", local_hosts(tmp_path))
    assert result.returncode == 0, result.stderr
    captured = json.loads(result.stdout)
    assert list(captured) == ["local1"]
    info = EnvironmentInfo.model_validate(captured["local1"])
    assert info.kernel != "unknown" and info.os != "unknown"


def test_env_diff_against_a_page_from_elsewhere_exits_1(tmp_path: Path) -> None:
    result = harness("env", "diff", PAGES / "nvidia-resnet50.md", "--hosts", local_hosts(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "local1 vs" in result.stdout
    drift_line = next(line for line in result.stdout.splitlines() if line.startswith("drift: "))
    drifting = drift_line.removeprefix("drift: ").split(", ")
    # this machine is no Ubuntu 20.04 / 5.4.0-113 / driver 470 A100 host
    assert {"os", "kernel", "driver", "accelerator_model"} <= set(drifting)
    for field in drifting:
        assert field in result.stdout.split("drift: ")[0]
    assert "vendor nvidia" in result.stderr  # found through the framework pin


def test_env_diff_against_this_machines_own_environment_exits_0(tmp_path: Path) -> None:
    hosts = local_hosts(tmp_path)
    captured = harness("env", "capture", "--hosts", hosts)
    assert captured.returncode == 0, captured.stderr
    info = EnvironmentInfo.model_validate(json.loads(captured.stdout)["local1"])

    def known(value: str) -> str | None:
        return None if value == "unknown" else value

    page = VendorPage(
        title="local 配置与运行信息参考",
        hardware=HardwareEnv.build(accelerator_model=known(info.accelerator_model), cpu_model=known(info.cpu_model)),
        software=SoftwareEnv.build(os=known(info.os), kernel=known(info.kernel),
                                   driver=known(info.accelerator_driver),
                                   docker_version=known(info.docker_version), dependencies={}),
    )
    path = tmp_path / "README.md"
    path.write_text(render_page(page), encoding="utf-8")
    result = harness("env", "diff", path, "--hosts", hosts)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no drift" in result.stdout


def test_env_diff_bad_input_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    text = (PAGES / "nvidia-resnet50.md").read_text(encoding="utf-8").replace("| 4659 |", "| fast |")
    bad.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "| fast |" in row)
    result = harness("env", "diff", bad, "--hosts", local_hosts(tmp_path))
    assert result.returncode == 2
    assert f"{bad}: line {line}: p_core cell 'fast' is not a number" in result.stderr
    missing = harness("env", "diff", PAGES / "nvidia-resnet50.md", "--hosts", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "inventory file not found" in missing.stderr
    assert harness("env", "diff").returncode == 2


# --------------------------------------------------------------------------- bench --repro (dry run)


def dry_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return harness("bench", "--dry-run", "--run-id", "20261125-000000-abcdef", "--hosts", GOLDEN_HOSTS, *args)


@pytest.mark.parametrize(
    ("vendor", "page", "line"),
    [
        ("nvidia", "nvidia-resnet50.md", "FROM nvcr.io/nvidia/pytorch:21.02-py3"),
        ("kunlunxin", "kunlunxin-mobilenetv2.md", "FROM pytorch1.12.1-cpu-ubuntu18.04:v0.04"),
        ("iluvatar", "iluvatar-mobilenetv2.md", "FROM corex:3.1.0"),
    ],
)
def test_bench_repro_builds_the_pages_framework(vendor: str, page: str, line: str) -> None:
    case = page.removesuffix(".md").split("-", 1)[1]  # the page's case: it has this vendor's hardware files
    result = dry_run("--case", case, "--vendor", vendor, "--config", "1x8", "--repro", PAGES / page)
    assert result.returncode == 0, result.stderr
    assert line in [text.strip() for text in result.stdout.splitlines()]
    assert "训练框架版本" in result.stderr


def test_bench_repro_param_wins_over_the_pin() -> None:
    result = dry_run("--vendor", "nvidia", "--config", "1x8", "--repro", PAGES / "nvidia-resnet50.md",
                     "--param", "ngc_tag=22.01-py3")
    assert result.returncode == 0, result.stderr
    assert "FROM nvcr.io/nvidia/pytorch:22.01-py3" in result.stdout
    assert "--param ngc_tag=22.01-py3 overrides the page's pin ngc_tag=21.02-py3" in result.stderr


def test_bench_repro_unknown_pin_exits_2() -> None:
    page = PAGES / "nvidia-resnet50.md"
    result = dry_run("--vendor", "cpu", "--config", "1x1", "--repro", page)
    assert result.returncode == 2
    assert (f"error: {page}: 训练框架版本: framework 'pytorch-1.8.0a0+52ea372' has no pin in "
            "Dockerfiles/cpu/vendor.yaml (framework_pins); known pins there: none; VENDOR=nvidia pins it"
            in result.stderr)
    assert result.stdout == ""


def test_bench_repro_bad_page_exits_2_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "README.md"
    text = (PAGES / "iluvatar-mobilenetv2.md").read_text(encoding="utf-8").replace("（1x1）", "")
    bad.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "| BI-V100单机8卡 " in row)
    result = dry_run("--vendor", "iluvatar", "--repro", bad)
    assert result.returncode == 2
    assert f"error: {bad}: line {line}: config 'BI-V100单机8卡' has no (NxP)" in result.stderr
    missing = dry_run("--vendor", "iluvatar", "--repro", tmp_path / "none.md")
    assert missing.returncode == 2 and f"{tmp_path / 'none.md'}: cannot read the vendor page" in missing.stderr
