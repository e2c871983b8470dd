"""Environment capture on this machine (no accelerator tools here: those fields
are unknown, with a reason), the parsers on recorded output, and the
comparisons across hosts and against a vendor page."""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from harness.backends.marked import batch_answer, batch_commands, inner_argv, marked_argv
from harness.backends.transport import CommandResult, FetchedFiles, LocalTransport, Transport
from harness.hostinfo.compare import (
    cpu_matches,
    differences,
    drift,
    kernel_matches,
    names_match,
    os_matches,
    split_package_version,
    version_matches,
)
from harness.hostinfo.model import UNKNOWN, EnvironmentInfo, FrameworkVersions
from harness.hostinfo.parsers import (
    parse_cpuinfo_model,
    parse_framework_probe,
    parse_ibstat,
    parse_nic_speeds,
    parse_os_release,
)
from harness.hostinfo.probes import PYTHON_PROBE, capture_environment, container_probe_argv
from harness.pages.parse import parse_page
from harness.pages.repro import HostDrift, drift_table, env_spec_from_page

FIXTURES = Path(__file__).parent / "fixtures" / "smi"


# Copies of the five published vendor pages.
REFERENCE_DIR = Path(__file__).parent / "fixtures" / "vendor_pages"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def table_text(table: Table) -> str:
    """A rich table as plain text, the way a log or report shows it."""
    console = Console(width=140, record=True, color_system=None, file=io.StringIO())
    console.print(table)
    return console.export_text()


@pytest.fixture(scope="module")
def local_env() -> EnvironmentInfo:
    return capture_environment(LocalTransport())


# --------------------------------------------------------------------------- real capture here


def test_capture_on_this_machine(local_env: EnvironmentInfo) -> None:
    assert local_env.host == "localhost" and local_env.captured_at
    assert local_env.os == parse_os_release(Path("/etc/os-release").read_text())
    uname = os.uname()
    assert local_env.kernel == f"{uname.release} {uname.machine}"
    assert local_env.cpu_model == parse_cpuinfo_model(Path("/proc/cpuinfo").read_text())
    if not any(shutil.which(tool) for tool in ("nvidia-smi", "ixsmi", "xpu_smi")):
        assert local_env.accelerator_model == UNKNOWN and local_env.accelerator_count is None
        assert "not found" in local_env.unknown_reasons["accelerator_model"]
        assert "nvidia-smi" in local_env.unknown_reasons["accelerator_driver"]
    if not shutil.which("dmidecode") and not Path("/sys/class/dmi/id/product_name").exists():
        assert local_env.machine_model == UNKNOWN and "dmidecode" in local_env.unknown_reasons["machine_model"]
    if local_env.network_type == UNKNOWN:
        assert local_env.unknown_reasons["network_type"]
    if local_env.docker_version == UNKNOWN:
        assert local_env.unknown_reasons["docker_version"]
    # every unknown field says why
    for field, value in local_env.comparable_fields().items():
        if value == UNKNOWN and not field.startswith("framework."):
            assert field in local_env.unknown_reasons, field
    for name in ("torch", "cuda", "cudnn", "nccl", "torchvision"):
        if getattr(local_env.framework, name) == UNKNOWN:
            assert local_env.framework.unknown_reasons[name]
    assert local_env.framework.source == "python3 on localhost"


def test_framework_probe_with_this_python() -> None:
    versions = capture_environment(LocalTransport(), python=sys.executable).framework
    assert versions.python == ".".join(str(part) for part in sys.version_info[:3])
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        assert versions.torch == UNKNOWN and "torch" in versions.unknown_reasons
        return
    assert versions.torch.split("+")[0] == torch_version.split("+")[0]  # metadata drops the local "+cu130"
    if versions.nccl != UNKNOWN:
        assert versions.nccl.count(".") == 2


def test_framework_probe_with_a_missing_python() -> None:
    versions = capture_environment(LocalTransport(), python="/nonexistent/python3").framework
    assert versions.torch == UNKNOWN and "not found" in versions.unknown_reasons["torch"]


def test_container_probe() -> None:
    argv = container_probe_argv("harness/resnet50:abc", ["-v", "/data:/data:ro", "--gpus", "all"])
    assert argv[:6] == ["docker", "run", "--rm", "--pull=never", "--entrypoint", "python3"]
    assert argv[6:10] == ["-v", "/data:/data:ro", "--gpus", "all"]
    assert argv[10:] == ["harness/resnet50:abc", "-c", PYTHON_PROBE]
    # an image that is not there: unknown with docker's reason, nothing pulled
    versions = capture_environment(LocalTransport(), image="harness-test/not-built:none", timeout=60).framework
    assert versions.torch == UNKNOWN
    assert versions.source == "image harness-test/not-built:none on localhost"
    assert versions.unknown_reasons["torch"]


# --------------------------------------------------------------------------- parsers on recorded output


def test_ibstat() -> None:
    assert parse_ibstat(fixture("ibstat_mlx5_active_200.txt")) == ("InfiniBand", "200Gb/s")
    down = fixture("ibstat_mlx5_active_200.txt").replace("State: Active", "State: Down")
    assert parse_ibstat(down) is None


def test_nic_speeds() -> None:
    output = "/sys/class/net/eth0/speed:25000\n/sys/class/net/eth1/speed:-1\n/sys/class/net/lo/speed:10\n"
    assert parse_nic_speeds(output) == {"eth0": 25000}


def test_framework_probe_output() -> None:
    versions = parse_framework_probe(
        'noise\n{"python": "3.10.12", "torch": "2.1.0+cu121", "cuda": "12.1", "cudnn": 8902, "nccl": [2, 18, 1],'
        ' "torchvision": "0.16.0"}\n'
    )
    assert (versions.torch, versions.cuda, versions.cudnn, versions.nccl) == ("2.1.0+cu121", "12.1", "8902", "2.18.1")
    old_nccl = parse_framework_probe('{"python": "3.8.0", "torch": "1.8.0a0+52ea372", "cuda": "11.2", "nccl": 2708}')
    assert old_nccl.nccl == "2.7.8" and old_nccl.torchvision == UNKNOWN
    cpu_build = parse_framework_probe('{"python": "3.11.7", "torch": "2.14.1+cpu", "cuda": null, "nccl_error": "AttributeError()"}')
    assert cpu_build.cuda == UNKNOWN and "without" in cpu_build.unknown_reasons["cuda"]
    assert cpu_build.nccl == UNKNOWN and cpu_build.unknown_reasons["nccl"] == "AttributeError()"
    garbage = parse_framework_probe("Traceback (most recent call last):\nSyntaxError: bad")
    assert garbage.torch == UNKNOWN and "SyntaxError" in garbage.unknown_reasons["torch"]


class ReplayTransport(Transport):
    """Recorded answers per argv prefix (127 for the rest), given the way a
    noisy remote shell gives them: the probe's own wrapper (harness/backends/marked.py)
    runs for real under `sh`, with the recording in place of the tool, and a
    login banner is printed before it and at exit on both streams."""

    SHELL = 'echo "Welcome to $0"; echo "module: noise" >&2; "$@"; rc=$?; echo bye; echo bye-err >&2; exit $rc'

    def __init__(self, outputs: dict[tuple[str, ...], str], host: str) -> None:
        self.host = host
        self.outputs = outputs
        self.batches = 0

    def answer(self, argv: list[str]) -> tuple[str, int]:
        for prefix, text in self.outputs.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return text, 0
        return f"{argv[0]}: not found\n", 127

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        batch = batch_commands(argv)
        if batch is not None:  # each command of the batch as if run alone, its status after it
            self.batches += 1
            text = "".join(batch_answer(nonce, self.run(marked_argv(probe, nonce), timeout)) for nonce, probe in batch)
            return CommandResult(self.host, argv, 0, text)
        probe = inner_argv(argv)
        assert probe is not None, f"a probe ran unmarked: {argv}"
        text, code = self.answer(probe)
        replay = ["sh", "-c", 'printf "%s" "$1"; exit "$2"', "replay", text, str(code)]
        shell = subprocess.run(["sh", "-c", self.SHELL, "login-shell", *argv[: len(argv) - len(probe)], *replay],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        return CommandResult(self.host, argv, shell.returncode, shell.stdout.decode())

    def put_tree(self, local: Path, remote: str) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    def get_tree(self, remote: str, local: Path) -> FetchedFiles:  # pragma: no cover - not used
        raise NotImplementedError


def test_capture_finds_the_device_tool_that_is_there() -> None:
    transport = ReplayTransport(
        {
            ("xpu_smi",): fixture("xpu_smi_table_k200_driver-4.0.txt"),
            ("ibstat",): fixture("ibstat_mlx5_active_200.txt"),
            ("uname",): "5.4.0-26-generic x86_64\n",
            ("cat", "/etc/os-release"): 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n',
            ("python3",): '{"python": "3.8.10", "torch": "1.12.1+cpu", "cuda": null}\n',
        },
        host="kunlun1",
    )
    env = capture_environment(transport)
    assert transport.batches == 1  # every probe known up front asked in one round trip
    assert (env.accelerator_model, env.accelerator_count, env.accelerator_memory_mib) == ("K200", 4, 8064)
    assert env.accelerator_driver == "4.0"
    assert (env.network_type, env.network_rate) == ("InfiniBand", "200Gb/s")
    assert env.os == "Ubuntu 20.04.6 LTS" and env.kernel == "5.4.0-26-generic x86_64"
    assert env.framework.torch == "1.12.1+cpu"
    assert env.docker_version == UNKNOWN and "not found" in env.unknown_reasons["docker_version"]
    assert not any(noise in env.model_dump_json() for noise in ("Welcome", "module: noise", "bye"))


def test_capture_asks_the_hosts_own_docker_engine() -> None:
    engine2 = ("env", "DOCKER_HOST=unix:///run/engine2.sock", "docker")
    transport = ReplayTransport({(*engine2, "version"): "24.0.7\n", ("docker", "version"): "20.10.24\n"}, host="n2")
    env = capture_environment(transport, python=None, docker=engine2)
    assert env.docker_version == "24.0.7"  # the engine docker_host names, not the default one


# --------------------------------------------------------------------------- across hosts


def test_differences(local_env: EnvironmentInfo) -> None:
    assert differences({"a": local_env, "b": local_env.model_copy(deep=True)}) == []
    other = local_env.model_copy(deep=True)
    other.host = "b"
    other.kernel = "5.4.0-113-generic x86_64"
    other.framework.torch = "1.8.0a0+52ea372"
    found = {difference.field: difference.values for difference in differences({"a": local_env, "b": other})}
    assert set(found) == {"kernel", "framework.torch"}
    assert found["kernel"] == {"a": local_env.kernel, "b": "5.4.0-113-generic x86_64"}
    assert differences({"only": local_env}) == []


# --------------------------------------------------------------------------- against a vendor page


def test_normalisation_rules() -> None:
    assert os_matches("Ubuntu 20.04", "Ubuntu 20.04.6 LTS")
    assert not os_matches("Ubuntu 20.04", "Ubuntu 22.04.3 LTS")
    assert not os_matches("Ubuntu 20.04", "Debian GNU/Linux 12 (bookworm)")
    assert kernel_matches("5.4.0-113-generic", "5.4.0-113-generic x86_64")
    assert kernel_matches("5.4.0-148-generic x86_64", "5.4.0-148-generic x86_64")
    assert not kernel_matches("5.4.0-148-generic x86_64", "5.4.0-148-generic aarch64")
    assert not kernel_matches("5.4.0-113-generic", "5.4.0-26-generic x86_64")
    assert split_package_version("pytorch-1.8.0a0+52ea372") == ("pytorch", "1.8.0a0+52ea372")
    assert split_package_version("torch-1.13.1+corex.3.1.0") == ("torch", "1.13.1+corex.3.1.0")
    assert split_package_version("xmlir+e70db8f6") == ("xmlir+e70db8f6", None)
    assert version_matches("1.8.0a0+52ea372", "1.8.0a0+52ea372")
    assert version_matches("11.4", "11.4.2") and not version_matches("11.4", "11.40")
    assert not version_matches("20.10.16", "20.10.24+dfsg1")
    assert names_match("NVIDIA_A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB")
    assert names_match("Iluvatar BI-V100 32GB", "Iluvatar BI-V100")
    assert names_match("昆仑芯AI加速卡R300", "R300")
    assert not names_match("NVIDIA_A100-SXM4-40GB", "NVIDIA H100 80GB HBM3")
    assert cpu_matches("AMD EPYC7742-64core@1.5G", "AMD EPYC 7742 64-Core Processor")
    assert not cpu_matches("AMD EPYC7742-64core@1.5G", "AMD EPYC 7763 64-Core Processor")


def test_drift_against_the_resnet50_page() -> None:
    page = parse_page((REFERENCE_DIR / "nvidia-resnet50.md").read_text(), "nvidia-resnet50.md")
    expected = env_spec_from_page(page)
    host = EnvironmentInfo(
        host="a100-1",
        machine_model="NVIDIA DGX A100 920-23687-2530-000",
        accelerator_model="NVIDIA A100-SXM4-40GB",
        accelerator_count=8,
        accelerator_memory_mib=40960,
        accelerator_driver="470.129.06",
        network_type="InfiniBand",
        network_rate="200Gb/s",
        os="Ubuntu 20.04.6 LTS",
        kernel="5.4.0-113-generic x86_64",
        docker_version="20.10.24",
        framework=FrameworkVersions(python="3.8.5", torch="1.8.0a0+52ea372", cuda="11.4"),
    )
    rows = {row.field: row for row in drift(expected, host)}
    assert rows["os"].matches and rows["kernel"].matches and rows["driver"].matches
    assert rows["accelerator_model"].matches and rows["device_memory_gib"].matches
    assert rows["framework"].matches and rows["framework"].actual == "1.8.0a0+52ea372"
    assert rows["dependencies.cuda"].matches
    assert rows["network_type"].matches and rows["network_rate"].matches
    assert rows["docker_version"].matches is False  # 20.10.16 on the page
    assert rows["machine_model"].expected == "NVIDIA_A100-SXM4-40GB"
    text = table_text(drift_table(HostDrift(host=host.host, rows=list(rows.values())), title="resnet50"))
    assert "✗" in text and "docker_version" in text and "20.10.24" in text


def test_drift_of_this_machine_from_the_pages(local_env: EnvironmentInfo) -> None:
    page = parse_page((REFERENCE_DIR / "iluvatar-mobilenetv2.md").read_text(), "iluvatar-mobilenetv2.md")
    rows = {row.field: row for row in drift(env_spec_from_page(page), local_env)}
    assert rows["kernel"].expected == "5.4.0-148-generic x86_64" and rows["kernel"].matches is False
    assert rows["os"].actual == local_env.os and rows["os"].matches is (local_env.os.startswith("Ubuntu 20.04"))
    assert rows["framework"].expected == "torch-1.13.1+corex.3.1.0" and rows["framework"].matches is False
    assert rows["accelerator_model"].actual == local_env.accelerator_model
    table = drift_table(HostDrift(host=local_env.host, rows=list(rows.values())))
    assert isinstance(table, Table) and table.row_count == len(rows)

    kunlunxin = parse_page((REFERENCE_DIR / "kunlunxin-mobilenetv2.md").read_text(), "kunlunxin-mobilenetv2.md")
    rows = {row.field: row for row in drift(env_spec_from_page(kunlunxin), local_env)}
    assert rows["framework"].matches is None  # xmlir is not probed
    assert rows["docker_image"].matches is None
    assert rows["dependencies.pytorch"].expected == "1.12.1+cpu"
    assert "docker_version" not in rows  # the page gives an image, not a Docker version
