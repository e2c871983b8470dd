"""Which faults a run attributes to its hosts (harness/faults/attribute.py): over
RunResult models, over the errors real transports raise, through the runner on
the in-process fake backend (results.json and the history carry them), and the
image copy that fails on one host for real (local processes)."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from fake_backend import FakeBackend, FakeNode
from rich.console import Console

from harness.backends.docker_image import copy_image
from harness.backends.docker_request import DockerNode, DockerRequest, docker_plan
from harness.backends.image import plan_job_image
from harness.backends.ssh import SshTransport
from harness.backends.transport import LocalTransport
from harness.core import watch
from harness.core.inventory import Cluster, Host, Inventory, load_inventory
from harness.core.job import make_job
from harness.core.results import NodeOutcome, NodeTransport, RunResult, Straggler
from harness.core.runner import run_job
from harness.core.vendor import load_vendor
from harness.core.watch import WatchLimits
from harness.errors import ConnectionLost, HostFault, HostUnreachable, UserError
from harness.fabric.model import Fabric
from harness.faults.attribute import faults_from_preflight, faults_from_stage, run_faults
from harness.report import history

IB = Fabric(type="ib", hcas=["mlx5_0"])


def _result(**fields: object) -> RunResult:
    base: dict[str, object] = dict(run_id="r7", case="resnet50", vendor="cpu", accelerator="cpu", nnodes=2,
                                   nproc_per_node=2, precision="fp32", fix_hp="/", status="failed",
                                   failure="host lost: beta did not answer for 60 s", failure_kind="infra")
    return RunResult.model_validate({**base, **fields})


def _straggler(rank: int, host: str, score: float) -> Straggler:
    return Straggler(rank=rank, node_rank=1, host=host, device=f"cpu:{rank}", score=score, compute_s_p50=0.02 / score,
                     fastest_compute_s_p50=0.02, why="clock 1.1 GHz")


def _node(rank: int, host: str, transport: str | None) -> NodeOutcome:
    return NodeOutcome(host=host, node_rank=rank, container=f"c{rank}", exit_code=0, log_dir="/x",
                       transport=NodeTransport(library="NCCL", transport=transport, notes=["NET/IB : No device found."]))


def test_a_lost_host_a_fallback_and_stragglers_each_get_their_code() -> None:
    result = _result(lost_hosts=["beta"], straggler_threshold=0.9,
                     stragglers=[_straggler(2, "gamma", 0.8), _straggler(3, "gamma", 0.7)],
                     nodes=[_node(0, "alpha", "ib"), _node(1, "delta", "socket")])
    found = {(f.host, f.code): f for f in run_faults(result, IB)}
    assert set(found) == {("beta", "BENCH-H02"), ("delta", "BENCH-F01"), ("gamma", "BENCH-S01")}
    assert "host lost: beta" in found["beta", "BENCH-H02"].evidence
    assert "TCP sockets" in found["delta", "BENCH-F01"].evidence and "No device found" in found["delta", "BENCH-F01"].evidence
    straggler = found["gamma", "BENCH-S01"].evidence  # one fault per host, every slow rank in its evidence
    assert "rank 2" in straggler and "rank 3" in straggler and "0.70" in straggler and "below 0.9" in straggler
    assert all(f.run_id == "r7" and "\n" not in f.evidence for f in found.values())


@pytest.mark.parametrize("fabric", [Fabric(type="ib", hcas=["mlx5_0"], allow_fallback=True),
                                    Fabric(type="ethernet"), Fabric()])
def test_sockets_are_no_fault_where_the_fabric_allows_them(fabric: Fabric) -> None:
    result = _result(status="success", failure=None, failure_kind=None, nodes=[_node(0, "alpha", "socket")])
    assert run_faults(result, fabric) == []


def test_a_healthy_run_has_no_fault() -> None:
    result = _result(status="success", failure=None, failure_kind=None, nodes=[_node(0, "alpha", "ib")])
    assert run_faults(result, IB) == []


def test_the_stage_error_and_the_lost_host_are_one_fault_per_host_and_code() -> None:
    stage = faults_from_stage(ConnectionLost("ssh connection lost during docker run", host="beta"), "r7")
    faults = run_faults(_result(lost_hosts=["beta"]), IB, stage)
    assert [(f.host, f.code) for f in faults] == [("beta", "BENCH-H02")]
    assert faults[0].evidence.startswith("ssh connection lost")


def test_preflight_errors_map_to_their_codes() -> None:
    silent = HostUnreachable("cannot reach root@10.0.0.2:22", host="beta")
    assert [(f.host, f.code) for f in faults_from_preflight(silent, "r1")] == [("beta", "BENCH-H01")]
    # A connection that dropped during the preflight: the host did not answer it (H01), mid-run it is lost (H02).
    dropped = ConnectionLost("lost during the checks", host="beta")
    assert [f.code for f in faults_from_preflight(dropped, "r1")] == ["BENCH-H01"]
    assert [f.code for f in faults_from_stage(dropped, "r1")] == ["BENCH-H02"]
    work_dir = HostUnreachable("cannot create /scratch/runs/r1", host="beta", code="BENCH-H03")
    assert [f.code for f in faults_from_preflight(work_dir, "r1")] == ["BENCH-H03"]
    # Nobody's fault but the user's: a host key or login refused, a bad field.
    assert faults_from_preflight(HostUnreachable("host key of x does not match known_hosts"), "r1") == []
    assert faults_from_preflight(UserError("bad fix_hp"), "r1") == []
    copy = HostFault("docker load failed on beta, gamma", ["beta", "gamma"], "BENCH-I01")
    assert [(f.host, f.code) for f in faults_from_stage(copy, "r1")] == [("beta", "BENCH-I01"), ("gamma", "BENCH-I01")]


def test_a_host_that_never_answers_is_named_by_the_real_transport(tmp_path: Path) -> None:
    # A closed port on the loopback: connection refused on every attempt until the window ends.
    host = Host(name="ghost", address="127.0.0.1", port=1, user="root", devices=1, work_dir="/tmp/x")
    transport = SshTransport(host, Cluster(known_hosts=str(tmp_path / "kh"), ssh_timeout_s=1))
    transport.connect_window_s = 0.5
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        transport.run(["true"], timeout=5)
    transport.close()
    assert time.monotonic() - started < 20
    faults = faults_from_preflight(caught.value, "r2")
    assert [(f.host, f.code, f.run_id) for f in faults] == [("ghost", "BENCH-H01", "r2")]
    assert "gave up" in faults[0].evidence


# -- through the runner (tests/fake_backend.py) -------------------------------------------------------------


@pytest.fixture()
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "POLL_S", 0.01)
    monkeypatch.setattr("harness.core.backend.PROGRESS_READ_S", 0.05)


def _inventory(tmp_path: Path) -> Inventory:
    hosts = [{"name": name, "address": f"10.0.0.{i + 1}", "user": "root", "devices": 1, "work_dir": "/scratch"}
             for i, name in enumerate(("alpha", "beta", "gamma"))]
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"known_hosts": str(tmp_path / "kh")}, "hosts": hosts}))
    return load_inventory(path)


def _run(tmp_path: Path, backend: FakeBackend) -> RunResult:
    job = make_job("resnet50", "cpu", "cpu", "2x1", run_id="flt", timeout_s=30)
    return run_job(job, _inventory(tmp_path), backend, tmp_path / "results", Console(file=io.StringIO(), width=200),
                   limits=WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=0.3))


def _recorded_faults(tmp_path: Path) -> list[tuple[str, str]]:
    saved = json.loads((tmp_path / "results" / "flt" / "resnet50" / "2x1" / "results.json").read_text())
    return [(f["host"], f["code"]) for f in saved["faults"]]


@pytest.mark.usefixtures("fast_watch")
def test_a_lost_host_is_recorded_with_its_code_in_results_and_history(tmp_path: Path) -> None:
    backend = FakeBackend([FakeNode(["running"], {0: [(1000, "world", {})]}), FakeNode(["running", "unreachable"])])
    result = _run(tmp_path, backend)
    assert result.lost_hosts == ["beta"]
    assert _recorded_faults(tmp_path) == [("beta", "BENCH-H02")]
    database = tmp_path / "results" / history.HISTORY_FILE
    assert [(f.host, f.code, f.run_id) for f in history.faults(database)] == [("beta", "BENCH-H02", "flt")]
    assert history.faults(database, host="alpha") == []


@pytest.mark.usefixtures("fast_watch")
def test_an_image_copy_that_failed_on_a_host_is_recorded_as_its_fault(tmp_path: Path) -> None:
    failed = HostFault("copying bench-cpu:abc (docker load) failed on beta: no space left on device", ["beta"],
                       "BENCH-I01")
    result = _run(tmp_path, FakeBackend([FakeNode(), FakeNode()], fail_image=failed))
    assert result.failure_kind == "infra" and "no space left" in (result.failure or "")
    assert _recorded_faults(tmp_path) == [("beta", "BENCH-I01")]


@pytest.mark.usefixtures("fast_watch")
def test_a_host_dropping_at_launch_is_lost_mid_run(tmp_path: Path) -> None:
    dropped = ConnectionLost("ssh connection to root@10.0.0.2:22 lost during docker run", host="beta")
    _run(tmp_path, FakeBackend([FakeNode(), FakeNode()], fail_launch=dropped))
    assert _recorded_faults(tmp_path) == [("beta", "BENCH-H02")]


def test_history_rows_made_before_the_faults_column_still_read(tmp_path: Path) -> None:
    database = tmp_path / history.HISTORY_FILE
    with sqlite3.connect(database) as connection:  # the table as an older harness made it
        connection.execute(history._SCHEMA.replace(",\n    failure_kind TEXT", ""))
        connection.execute("INSERT INTO runs VALUES ('old', '2026-01-01T00:00:00+00:00', 'resnet50', 'cpu', 'cpu', "
                           "'1x1', 'fp32', '/', 'success', 1, 2, 3, 4, NULL, NULL, NULL, 'img', '/x.json')")
    connection.close()
    assert history.faults(database) == []
    new = _result(run_id="new", finished_at="2026-01-02T00:00:00+00:00", lost_hosts=["beta"])
    new.faults = run_faults(new, Fabric())
    history.record(database, new, tmp_path / "new.json")
    assert [(f.host, f.run_id) for f in history.faults(database)] == [("beta", "new")]
    assert [row.run_id for row in history.runs(database)] == ["new", "old"]


# -- the image copy, for real on local processes ------------------------------------------------------------


def test_a_docker_load_that_fails_on_one_host_names_that_host(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    job = make_job("resnet50", "cpu", "cpu", "3x1", run_id="cp")
    vendor = load_vendor("cpu")
    plan = docker_plan(job, inventory, vendor, plan_job_image(job, inventory, vendor))
    assert isinstance(plan.request, DockerRequest)

    def local(entry: DockerNode, load: list[str]) -> DockerNode:
        folder = tmp_path / "img" / entry.node.host.name
        image = dataclasses.replace(entry.image, image_folder=str(folder), load=load,
                                    save=["sh", "-c", 'mkdir -p "$1" && echo tar > "$1/image.tar"', "sh", str(folder)])
        return dataclasses.replace(entry, image=image)

    loads = {"beta": ["sh", "-c", "echo 'Error processing tar file: no space left on device' >&2; exit 1"],
             "gamma": ["true"]}
    source, *targets = [local(entry, loads.get(entry.node.host.name, ["true"])) for entry in plan.request.nodes]
    with pytest.raises(HostFault) as caught:
        copy_image(lambda entry: LocalTransport(entry.node.host.name), source, targets, "bench-cpu:t")
    assert caught.value.hosts == ["beta"] and caught.value.code == "BENCH-I01"
    assert "no space left on device" in str(caught.value)
    assert not any((tmp_path / "img" / name).exists() for name in ("alpha", "beta", "gamma"))  # removed everywhere


# -- the fabric preflight: a down port is its host's fault, a rate mismatch nobody's alone --------------------


def test_an_hca_port_down_is_f04_of_its_host_and_differing_rates_are_no_fault(tmp_path: Path) -> None:
    from test_fabric_wiring import IB as IB_FIELDS
    from test_fabric_wiring import host_with_ibstat, rdma_dir

    from harness.backends.fabric_checks import check_fabric
    from harness.errors import HostsNotReady

    fabric = Fabric(**IB_FIELDS)
    down = [host_with_ibstat(tmp_path, "alpha", "ibstat_mlx5_active_200_roce.txt"),
            host_with_ibstat(tmp_path, "beta", "ibstat_mlx5_down_40.txt")]
    with pytest.raises(HostsNotReady) as raised:
        check_fabric(fabric, down, "hosts.yaml", rdma_dir=rdma_dir(tmp_path), min_memlock_kib=0)
    assert raised.value.exit_code == 2 and list(raised.value.hosts) == ["beta"]
    faults = faults_from_preflight(raised.value, "r3")
    assert [(f.host, f.code) for f in faults] == [("beta", "BENCH-F04")]
    assert "mlx5_0 has no Active port" in faults[0].evidence
    slow = [host_with_ibstat(tmp_path / "2", "alpha", "ibstat_mlx5_active_200_roce.txt"),
            host_with_ibstat(tmp_path / "2", "beta", "ibstat_mlx5_active_100_roce.txt")]
    with pytest.raises(UserError) as mismatch:
        check_fabric(fabric, slow, "hosts.yaml", rdma_dir=rdma_dir(tmp_path), min_memlock_kib=0)
    assert not isinstance(mismatch.value, HostsNotReady) and faults_from_preflight(mismatch.value, "r3") == []
