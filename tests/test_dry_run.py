"""Golden files of the dry run: the exact commands every node would run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT

GOLDEN = Path(__file__).parent / "golden"


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--dry-run", "--run-id", "20261125-000000-abcdef", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def normalise(text: str) -> str:
    # The tag hashes the training code too; any edit of cases/ changes it.
    text = re.sub(r"bench/([a-z0-9_-]+):[0-9a-f]{16}", r"bench/\1:<content-hash>", text)
    text = re.sub(r"content_hash=[0-9a-f]{64}", "content_hash=<content-hash>", text)
    text = re.sub(r"/build/[0-9a-f]{16}-", "/build/<content-hash>-", text)
    text = re.sub(r"_[0-9a-f]{16}-n(\d)/", r"_<content-hash>-n\1/", text)
    return text.replace(str(REPO_ROOT), "<repo>")


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("dry_run_cpu_2x2.txt", ["--vendor", "cpu", "--config", "2x2"]),
        ("dry_run_cpu_2x2_realdata_fixhp.txt",
         ["--vendor", "cpu", "--config", "2x2", "--real-data", "--fix-hp", "bs=32,lr=0.1"]),
    ],
)
def test_dry_run_matches_golden(name: str, args: list[str]) -> None:
    result = dry_run("--hosts", str(GOLDEN / "hosts_2x2.yaml"), *args)
    assert result.returncode == 0, result.stderr
    text = normalise(result.stdout)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("vendor", ["nvidia", "iluvatar", "kunlunxin"])
def test_dry_run_on_an_ib_fabric_matches_golden(vendor: str) -> None:
    """RDMA devices, IPC_LOCK and one unlimited memlock; the vendor's collective
    variables, with the debug level that shows the transport; cluster.env kept."""
    result = dry_run("--hosts", str(GOLDEN / "hosts_2x8_ib.yaml"), "--case", "allreduce", "--vendor", vendor,
                     "--config", "2x8")
    assert result.returncode == 0, result.stderr
    text = normalise(result.stdout)
    golden = GOLDEN / f"dry_run_{vendor}_2x8_ib.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    for line in (line for line in text.splitlines() if line.strip().startswith("run:")):
        assert line.count("--ulimit memlock=") == 1
        assert "--device /dev/infiniband --cap-add IPC_LOCK" in line


def test_dry_run_of_the_bare_payload_matches_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    """No image and no container: each node's script (setup lines, variables, torchrun
    from the site's Python) and how it is started; the secret's value appears nowhere."""
    monkeypatch.setenv("BENCH_GOLDEN_SECRET", "s3cr3t-value")
    result = dry_run("--hosts", str(GOLDEN / "hosts_2x8_bare.yaml"), "--vendor", "nvidia", "--config", "2x8")
    assert result.returncode == 0, result.stderr
    text = normalise(result.stdout)
    golden = GOLDEN / "dry_run_nvidia_2x8_bare.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    assert "s3cr3t-value" not in result.stdout + result.stderr and "docker" not in text and "image:" not in text
    assert "module load cuda/12.4 nccl/2.21" in text and "WANDB_API_KEY=***" in text


def test_an_ib_fabric_the_vendor_cannot_express_is_bad_input() -> None:
    result = dry_run("--hosts", str(GOLDEN / "hosts_2x8_ib.yaml"), "--case", "allreduce", "--vendor", "cpu",
                     "--config", "2x2")
    assert result.returncode == 2
    assert "hosts_2x8_ib.yaml: cluster.fabric: vendor cpu's collective library gloo has no variable for hcas" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_dry_run_touches_no_host() -> None:
    # 10.0.0.x is not reachable from here: a dry run that tried to connect would fail or hang.
    result = dry_run("--hosts", str(GOLDEN / "hosts_2x2.yaml"), "--config", "2x8")
    assert result.returncode == 0, result.stderr
    assert "--nnodes 2 --nproc_per_node 8 --node_rank 1 --master_addr 10.0.0.1 --master_port 29611" in result.stdout


def test_dry_run_needing_more_hosts_than_listed_is_a_user_error() -> None:
    result = dry_run("--hosts", str(GOLDEN / "hosts_2x2.yaml"), "--config", "3x1")
    assert result.returncode == 2
    assert "hosts_2x2.yaml: hosts: the job needs 3 hosts but the inventory lists 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_dry_run_with_more_processes_than_devices_is_a_user_error() -> None:
    result = dry_run("--hosts", str(GOLDEN / "hosts_2x2.yaml"), "--config", "1x16")
    assert result.returncode == 2
    assert "hosts.node1.devices" in result.stderr
