"""The fabric wired into the controller (issue 11): the inventory's section, the
containers' flags and variables, the preflight on the hosts (a real
LocalTransport running a recorded ibstat), and after the run the transport each
node's library chose, read from recorded NCCL logs in a collected results folder,
with the fallback rule through the real runner."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fake_backend import FakeBackend, FakeNode
from rich.console import Console

from harness import REPO_ROOT
from harness.backends.fabric_checks import check_fabric
from harness.backends.launch import container_env, fabric_run_args
from harness.backends.transport import CommandResult, LocalTransport
from harness.core import watch
from harness.core.inventory import Inventory, load_inventory
from harness.core.job import make_job
from harness.core.plan import RunPlan
from harness.core.results import NodeOutcome
from harness.core.runner import run_job
from harness.core.vendor import load_vendor
from harness.core.watch import WatchLimits
from harness.errors import UserError
from harness.fabric.model import Fabric
from harness.fabric.record import fabric_verdict
from harness.report.tables import print_results, report_html

FIXTURES = REPO_ROOT / "tests" / "fixtures"
IB = {"type": "ib", "hcas": ["mlx5_0", "mlx5_1"], "socket_ifname": "ib0", "gdr": True}


def write_inventory(tmp_path: Path, cluster: dict) -> Inventory:
    hosts = [{"name": name, "address": address, "user": "root", "devices": 1, "work_dir": "/scratch"}
             for name, address in (("alpha", "10.0.0.1"), ("beta", "10.0.0.2"))]
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"known_hosts": str(tmp_path / "kh"), **cluster}, "hosts": hosts}))
    return load_inventory(path)


# --- the inventory and the containers ------------------------------------------------


def test_the_cluster_has_no_fabric_by_default_and_reads_one(tmp_path: Path) -> None:
    assert write_inventory(tmp_path, {}).cluster.fabric == Fabric()
    assert write_inventory(tmp_path, {"fabric": IB}).cluster.fabric.hcas == ["mlx5_0", "mlx5_1"]
    with pytest.raises(UserError, match="cluster.fabric: .*type ib needs hcas"):
        write_inventory(tmp_path, {"fabric": {"type": "ib"}})


def test_fabric_variables_override_the_vendor_and_cluster_env_overrides_both(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"fabric": IB, "env": {"NCCL_SOCKET_IFNAME": "eth9"}})
    job = make_job("allreduce", "nvidia", "A100", "2x1", run_id="env")
    env, _ = container_env(job, inventory, load_vendor("nvidia"))
    assert env["NCCL_DEBUG"] == "INFO"  # the vendor's WARN gives way: the transport must be in the logs
    assert env["NCCL_DEBUG_SUBSYS"] == "INIT,NET" and env["NCCL_IB_HCA"] == "mlx5_0,mlx5_1"
    assert env["NCCL_SOCKET_IFNAME"] == "eth9"  # the user's explicit value wins
    plain, _ = container_env(job, write_inventory(tmp_path, {}), load_vendor("nvidia"))
    assert plain == {"NCCL_DEBUG": "WARN", "CUDA_VISIBLE_DEVICES": "0"}


def test_the_fabric_memlock_is_not_repeated_and_a_different_one_is_refused(tmp_path: Path) -> None:
    default = write_inventory(tmp_path, {"fabric": IB})  # cluster.ulimits holds memlock=-1:-1 already
    assert fabric_run_args(default) == ["--device", "/dev/infiniband", "--cap-add", "IPC_LOCK"]
    without = write_inventory(tmp_path, {"fabric": IB, "ulimits": ["stack=67108864:67108864"]})
    assert fabric_run_args(without)[-2:] == ["--ulimit", "memlock=-1:-1"]
    assert fabric_run_args(write_inventory(tmp_path, {})) == []
    small = write_inventory(tmp_path, {"fabric": IB, "ulimits": ["memlock=8388608:8388608"]})
    with pytest.raises(UserError, match=r"cluster.ulimits: cluster.ulimits sets memlock=8388608:8388608 but fabric "
                                        r"type ib needs memlock=-1:-1"):
        fabric_run_args(small)


# --- the preflight on the hosts ------------------------------------------------------

FAKE_IBSTAT = "#!/bin/sh\ncat '{fixture}'\n"


class HostPath(LocalTransport):
    """A real LocalTransport whose commands find this host's own tools first on PATH."""

    def __init__(self, host: str, bin_dir: Path) -> None:
        super().__init__(host)
        self.bin_dir = bin_dir

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        return super().run(["env", f"PATH={self.bin_dir}{os.pathsep}{os.environ['PATH']}", *argv], timeout, stdin)


def host_with_ibstat(tmp_path: Path, host: str, fixture: str | None) -> tuple[str, HostPath]:
    bin_dir = tmp_path / host / "bin"
    bin_dir.mkdir(parents=True)
    if fixture is not None:
        script = bin_dir / "ibstat"
        script.write_text(FAKE_IBSTAT.format(fixture=FIXTURES / "ibstat" / fixture))
        script.chmod(0o755)
    return host, HostPath(host, bin_dir)


def rdma_dir(tmp_path: Path) -> str:
    folder = tmp_path / "dev-infiniband"
    folder.mkdir(exist_ok=True)
    return str(folder)


def test_active_hcas_at_one_rate_on_every_host_pass(tmp_path: Path) -> None:
    hosts = [host_with_ibstat(tmp_path, name, "ibstat_mlx5_active_200_roce.txt") for name in ("alpha", "beta")]
    facts = check_fabric(Fabric(**IB), hosts, "hosts.yaml", rdma_dir=rdma_dir(tmp_path), min_memlock_kib=0)
    assert set(facts) == {"alpha", "beta"} and facts["alpha"]["memlock_hard"]


def test_a_down_hca_and_mismatched_rates_name_the_host_and_the_fact(tmp_path: Path) -> None:
    fabric = Fabric(**IB)
    down = [host_with_ibstat(tmp_path, "alpha", "ibstat_mlx5_active_200_roce.txt"),
            host_with_ibstat(tmp_path, "beta", "ibstat_mlx5_down_40.txt")]
    with pytest.raises(UserError) as raised:
        check_fabric(fabric, down, "hosts.yaml", rdma_dir=rdma_dir(tmp_path), min_memlock_kib=0)
    message = str(raised.value)
    assert message.startswith("hosts.yaml: cluster.fabric: fabric preflight (type ib, HCAs mlx5_0, mlx5_1) failed: ")
    assert "beta: mlx5_0 has no Active port (port 1 Down (Disabled))" in message
    assert "alpha:" not in message
    slow = [host_with_ibstat(tmp_path / "2", "alpha", "ibstat_mlx5_active_200_roce.txt"),
            host_with_ibstat(tmp_path / "2", "beta", "ibstat_mlx5_active_100_roce.txt")]
    with pytest.raises(UserError, match=r"alpha, beta: mlx5_0 link rates differ \(alpha 200 Gb/s, beta 100 Gb/s\)"):
        check_fabric(fabric, slow, "hosts.yaml", rdma_dir=rdma_dir(tmp_path), min_memlock_kib=0)


def test_no_ibstat_no_rdma_devices_and_a_small_memlock_are_each_named(tmp_path: Path) -> None:
    hosts = [host_with_ibstat(tmp_path, "alpha", None)]
    with pytest.raises(UserError) as raised:
        # The real memlock limit of this machine (8 MiB in the test container) against 1 TiB.
        check_fabric(Fabric(**IB), hosts, "hosts.yaml", rdma_dir=str(tmp_path / "no-such-dir"),
                     min_memlock_kib=2**30)
    message = str(raised.value)
    assert "alpha: ibstat is not installed" in message
    assert f"alpha: {tmp_path / 'no-such-dir'} is missing, so the containers get no RDMA device nodes" in message
    limit = subprocess.run(["sh", "-c", "ulimit -H -l"], capture_output=True, text=True, check=True).stdout.strip()
    if limit != "unlimited":
        assert f"alpha: hard memlock limit is {limit} KiB, expected unlimited" in message


def test_nothing_is_checked_without_an_ib_fabric(tmp_path: Path) -> None:
    assert check_fabric(Fabric(), [host_with_ibstat(tmp_path, "alpha", None)]) == {}
    assert check_fabric(Fabric(type="ethernet", socket_ifname="eth0"), [host_with_ibstat(tmp_path, "b", None)]) == {}


# --- after the run: the transport, from recorded logs ---------------------------------


def collected_node(folder: Path, rank: int, host: str, log: str) -> NodeOutcome:
    """A collected node folder as the ssh-docker backend leaves it, its rank's
    torchrun output a recorded NCCL log."""
    node_dir = folder / f"{host}_noderank{rank}"
    stdout = node_dir / "container" / "torchrun" / "none_abc" / "attempt_0" / "0" / "stdout.log"
    stdout.parent.mkdir(parents=True)
    stdout.write_text((FIXTURES / "nccl" / log).read_text(encoding="utf-8"))
    return NodeOutcome(host=host, node_rank=rank, container=f"c{rank}", exit_code=0, log_dir=str(node_dir))


def test_a_node_on_sockets_fails_an_ib_run_as_infra_unless_fallback_is_allowed(tmp_path: Path) -> None:
    nodes = [collected_node(tmp_path, 0, "alpha", "ib_gdrdma_nccl2.7.6.log"),
             collected_node(tmp_path, 1, "beta", "socket_no_libibverbs.log")]
    spec = load_vendor("nvidia").collective
    verdict = fabric_verdict(Fabric(**IB), spec, nodes)
    assert verdict.transports[0].transport == "ib" and verdict.transports[0].gdr is True
    assert verdict.transports[1].transport == "socket"
    assert verdict.failure is not None and verdict.failure.startswith(
        "fabric fallback: node 1 (beta): NCCL fell back to TCP sockets")
    assert "Failed to open libibverbs.so" in verdict.failure and "node 0" not in verdict.failure
    assert verdict.judge(None, None)[:2] == (verdict.failure, "infra")
    assert verdict.judge("rank 1 failed", "job") == ("rank 1 failed", "job", [verdict.failure])

    allowed = fabric_verdict(Fabric(**IB, allow_fallback=True), spec, nodes)
    assert allowed.failure is None
    assert allowed.judge(None, None)[:2] == (None, None)
    assert [w for w in allowed.warnings if "node 1 (beta): NCCL fell back" in w and "allow_fallback" in w]


def test_ib_and_roce_logs_pass_and_a_silent_log_is_a_warning(tmp_path: Path) -> None:
    nodes = [collected_node(tmp_path, 0, "alpha", "roce_nccl2.19.3.log"),
             NodeOutcome(host="beta", node_rank=1, container="c1", exit_code=0, log_dir=str(tmp_path / "beta"))]
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta" / "container.log").write_text("no collective output at all\n")
    verdict = fabric_verdict(Fabric(**IB), load_vendor("nvidia").collective, nodes)
    assert verdict.failure is None
    assert verdict.transports[0].transport == "roce" and verdict.transports[0].version == "2.19.3+cuda12.3"
    assert verdict.transports[1].transport is None
    assert verdict.warnings == ["node 1 (beta): no NCCL network lines in its logs, the transport on the ib fabric "
                                "is not verified"]


def test_a_library_whose_log_is_not_read_is_recorded_unknown(tmp_path: Path) -> None:
    nodes = [collected_node(tmp_path, 0, "alpha", "socket_no_libibverbs.log")]
    verdict = fabric_verdict(Fabric(**IB), load_vendor("kunlunxin").collective, nodes)
    assert verdict.failure is None and verdict.transports[0].library == "BKCL"
    assert verdict.transports[0].summary.startswith("unknown")
    assert "not verified" in verdict.warnings[0]
    assert fabric_verdict(Fabric(), load_vendor("nvidia").collective, nodes).transports == {}


# --- the same through the runner: results.json, the footnote, the HTML ---------------


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "POLL_S", 0.01)
    monkeypatch.setattr("harness.core.backend.PROGRESS_READ_S", 0.05)


def finished_rank(node_rank: int) -> list[tuple[int, str, dict]]:
    return [(1000, "process_start", {}), (1100, "world", {"node_rank": node_rank, "world_size": 2}),
            (2000, "train_start", {}), (3000, "step", {"samples": 4}), (4000, "train_stop", {"samples": 4, "steps": 1}),
            (4100, "summary", {}), (4200, "run_stop", {"status": "ok"})]


class NcclLogBackend(FakeBackend):
    """The fake backend whose collected nodes also hold a recorded NCCL log each."""

    def __init__(self, logs: list[str]) -> None:
        super().__init__([FakeNode(["exit:0"], {rank: finished_rank(rank)}) for rank in range(len(logs))])
        self.logs = logs

    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        outcomes = super().collect(plan, dest, node_ranks)
        for outcome in outcomes:
            stdout = Path(outcome.log_dir) / "container" / "torchrun" / "r" / "attempt_0" / "0" / "stdout.log"
            stdout.parent.mkdir(parents=True)
            stdout.write_text((FIXTURES / "nccl" / self.logs[outcome.node_rank]).read_text(encoding="utf-8"))
        return outcomes


@pytest.mark.parametrize("allow_fallback", [False, True])
def test_the_runner_records_each_nodes_transport_and_applies_the_fallback_rule(
        tmp_path: Path, fast_watch: None, allow_fallback: bool) -> None:
    inventory = write_inventory(tmp_path, {"fabric": {**IB, "allow_fallback": allow_fallback}})
    job = make_job("resnet50", "nvidia", "A100", "2x1", run_id="fab-run", timeout_s=30)
    backend = NcclLogBackend(["ib_gdrdma_nccl2.7.6.log", "socket_ib_disabled_nccl2.11.4.log"])
    result = run_job(job, inventory, backend, tmp_path / "results", Console(file=io.StringIO(), width=200),
                     limits=WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=30))
    out = tmp_path / "results" / "fab-run" / "resnet50" / "2x1"
    recorded = json.loads((out / "results.json").read_text())
    assert [node["transport"]["transport"] for node in recorded["nodes"]] == ["ib", "socket"]
    assert recorded["nodes"][0]["transport"]["summary"].startswith("ib (mlx5_14:1, mlx5_10:1, mlx5_8:1), "
                                                                   "GPU Direct RDMA on, NCCL 2.7.6")
    if allow_fallback:
        assert (recorded["status"], recorded["failure_kind"]) == ("success", None)
        assert any("node 1 (beta): NCCL fell back to TCP sockets" in w for w in recorded["warnings"])
    else:
        assert (recorded["status"], recorded["failure_kind"]) == ("failed", "infra")
        assert recorded["failure"].startswith("fabric fallback: node 1 (beta): NCCL fell back to TCP sockets")
        assert "over enp225s0f1 although the fabric is ib with HCAs mlx5_0, mlx5_1" in recorded["failure"]
    terminal = io.StringIO()
    print_results([result], Console(file=terminal, width=300), verbose=False)
    assert "fab-run: node 1 (beta) transport: socket" in terminal.getvalue()
    assert "fab-run: node 0 (alpha) transport: ib (mlx5_14:1" in terminal.getvalue()
    html = report_html([result])
    assert "ib (mlx5_14:1, mlx5_10:1, mlx5_8:1), GPU Direct RDMA on" in html
    assert html == (out / "report.html").read_text()


def test_an_ib_fabric_on_hosts_without_one_stops_before_anything_starts(make_hosts_yaml: Callable[..., Path],
                                                                       tmp_path: Path) -> None:
    """The real preflight over SSH on the two test hosts, which have no HCA: exit 2,
    every host and fact named, no image built, nothing recorded."""
    hosts = make_hosts_yaml(cluster_overrides={"fabric": {"type": "ib", "hcas": ["mlx5_0"]}}, devices=1)
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--case", "allreduce", "--vendor", "nvidia", "--config", "2x1",
         "--hosts", str(hosts), "--results", str(tmp_path / "results"), "--run-id", "e2e-ib-preflight"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {hosts}: cluster.fabric: fabric preflight (type ib, HCAs mlx5_0) failed: " in proc.stderr
    for host in ("node1", "node2"):
        assert f"{host}: /dev/infiniband is missing" in proc.stderr
        assert f"{host}: ibstat is not installed" in proc.stderr or f"{host}: HCA mlx5_0 not found" in proc.stderr
    assert re.search(r"^preflight\s", proc.stderr, re.MULTILINE)
    assert not re.search(r"^image\s", proc.stderr, re.MULTILINE)  # the image phase never ran
    assert not (tmp_path / "results" / "e2e-ib-preflight").exists()
