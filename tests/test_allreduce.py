"""The allreduce case for real: torchrun, gloo, a tiny size sweep; its events
read back into the bandwidth table and through the harness's own metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cases.allreduce import AllreduceConfig, bus_factor, message_sizes
from cases.case import load_case
from cases.config import load_config
from cases.errors import ConfigError
from harness import REPO_ROOT
from harness.core.events import read_event_files
from harness.core.metrics import compute_metrics
from harness.fabric.busbw import bandwidth_table, read_bandwidth, render_table

TINY = "max_bytes=4096,step_factor=4,warmup_iters=1,iters=3"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(name, None)
    return env


def _cases_run(log_dir: Path, fix_hp: str, nproc: int | None) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc else []
    argv = [sys.executable, *launcher, "-m", "cases.run", "--case", "allreduce", "--vendor", "cpu",
            "--config", f"cpux1x{nproc or 1}", "--log-dir", str(log_dir), "--fix-hp", fix_hp]
    return subprocess.run(argv, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=240)


@pytest.mark.usefixtures("training_processes")
@pytest.mark.parametrize("nproc", [2, 3])
def test_a_gloo_sweep_reports_every_size_with_bus_bandwidth(nproc: int, tmp_path: Path) -> None:
    done = _cases_run(tmp_path / "logs", TINY, nproc)
    assert done.returncode == 0, done.stderr[-3000:]
    by_rank = read_event_files(tmp_path / "logs")
    assert sorted(by_rank) == list(range(nproc))

    sizes = [8, 32, 128, 512, 2048, 4096]  # 8 B to 4 KiB, x4, ending at max_bytes as nccl-tests does
    for rank, events in by_rank.items():
        bandwidth = [e.value for e in events if e.key == "bandwidth"]
        assert [b["size_bytes"] for b in bandwidth] == sizes, rank
        for b in bandwidth:
            assert b["count"] == b["size_bytes"] // 4 and b["dtype"] == "float32" and b["world_size"] == nproc
            assert b["check"] == "ok" and b["iters"] == 3
            assert b["time_us"] > 0 and b["busbw_gbps"] > 0
            assert b["algbw_gbps"] == pytest.approx(b["size_bytes"] / (b["time_us"] * 1e-6) / 1e9)
            assert b["busbw_gbps"] == pytest.approx(b["algbw_gbps"] * 2 * (nproc - 1) / nproc)
        world = next(e.value for e in events if e.key == "world")
        assert (world["backend"], world["world_size"], world["precision"]) == ("gloo", nproc, "fp32")
    # every rank reports the slowest rank's time: one table whichever rank is read
    assert ([e.value for e in by_rank[0] if e.key == "bandwidth"]
            == [e.value for e in by_rank[nproc - 1] if e.key == "bandwidth"])

    table = read_bandwidth(tmp_path / "logs")
    assert table is not None and table.rank == 0 and table.world_size == nproc
    assert [row.size_bytes for row in table.rows] == sizes
    assert all(row.busbw_gbps == pytest.approx(row.algbw_gbps * bus_factor(nproc)) for row in table.rows)
    assert table.peak_busbw_gbps == max(row.busbw_gbps for row in table.rows)
    text = render_table(table)
    lines = text.splitlines()
    assert lines[1].split() == ["size(B)", "count", "type", "time_us", "algbw(GB/s)", "busbw(GB/s)"]
    assert [line.split()[0] for line in lines[2:8]] == [str(s) for s in sizes]
    assert lines[-1].startswith("# avg busbw ")

    # the harness's own metrics accept the run: it completed, and has no sample throughput
    metrics = compute_metrics(by_rank)
    assert metrics.e2e_time > 0 and metrics.world_size == nproc
    assert (metrics.p_whole, metrics.p_train, metrics.p_core, metrics.acc) == (None, None, None, None)
    assert metrics.stop_reason == "sweep_done"


def test_the_table_of_a_run_without_bandwidth_events_is_none(tmp_path: Path) -> None:
    (tmp_path / "events_rank0.log").write_text(':::BENCH {"time_ms": 1, "key": "step", "rank": 0, "value": {}}\n')
    assert read_bandwidth(tmp_path) is None
    assert bandwidth_table({}) is None


@pytest.mark.usefixtures("training_processes")
def test_outside_torchrun_the_case_refuses_with_exit_2(tmp_path: Path) -> None:
    done = _cases_run(tmp_path / "logs", TINY, None)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: --case allreduce measures a collective: run it under torchrun" in done.stderr


@pytest.mark.usefixtures("training_processes")
def test_an_unknown_fix_hp_key_is_bad_input(tmp_path: Path) -> None:
    done = _cases_run(tmp_path / "logs", "bs=64", 2)
    assert done.returncode != 0
    assert "unknown key 'batch_size'; known keys: min_bytes, max_bytes" in done.stderr


def test_the_default_sweep_is_8_bytes_to_256_mib_doubling() -> None:
    spec = load_case("allreduce")
    loaded = load_config("allreduce", spec.config, "nvidia", "A100x2x8", "")
    assert loaded.hardware_file is not None and loaded.hardware_file.endswith("configs/nvidia/A100.yaml")
    sizes = message_sizes(loaded.values)
    assert sizes[0] == 8 and sizes[-1] == 256 << 20 and len(sizes) == 26
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:]))
    for vendor, accelerator in (("iluvatar", "BI-V100x1x8"), ("kunlunxin", "R300x2x8"), ("cpu", "cpux1x2")):
        assert load_config("allreduce", spec.config, vendor, accelerator, "").hardware_file is not None


def test_the_sweep_is_configurable_and_checked() -> None:
    spec = load_case("allreduce")
    values = load_config("allreduce", spec.config, "cpu", "cpux1x2", "min_bytes=1024,max_bytes=65536,step_factor=2").values
    assert message_sizes(values) == [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    with pytest.raises(ConfigError, match="max_bytes 8 is below min_bytes 64"):
        load_config("allreduce", spec.config, "cpu", "cpux1x2", "min_bytes=64,max_bytes=8")
    with pytest.raises(ConfigError, match="step_factor"):
        load_config("allreduce", spec.config, "cpu", "cpux1x2", "step_factor=1")
    assert isinstance(values, AllreduceConfig)


def test_the_sweep_always_ends_at_max_bytes() -> None:
    spec = load_case("allreduce")
    by_four = load_config("allreduce", spec.config, "cpu", "cpux1x2", "max_bytes=65536,step_factor=4").values
    assert message_sizes(by_four) == [8, 32, 128, 512, 2048, 8192, 32768, 65536]
    one = load_config("allreduce", spec.config, "cpu", "cpux1x2", "min_bytes=64,max_bytes=64").values
    assert message_sizes(one) == [64]


def test_allreduce_2x2_through_the_harness_on_the_two_test_hosts(make_hosts_yaml: Callable[..., Path],
                                                                 tmp_path: Path) -> None:
    """`bench --case allreduce --vendor cpu --config 2x2`: gloo over the two sshd
    hosts' containers; the bandwidth table in results.json and printed after the
    metric table. An ethernet fabric on lo: each node's transport is recorded (the
    cpu vendor's gloo log is not read: unknown), nothing fails for it."""
    hosts = make_hosts_yaml(cluster_overrides={"fabric": {"type": "ethernet", "socket_ifname": "lo"}})
    run_id = "e2e-allreduce-2x2"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--case", "allreduce", "--vendor", "cpu", "--config", "2x2",
         "--hosts", str(hosts), "--results", str(tmp_path), "--run-id", run_id, "--fix-hp", TINY],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    result = json.loads((tmp_path / run_id / "allreduce" / "2x2" / "results.json").read_text())
    assert result["status"] == "success" and result["warnings"] == []
    bandwidth = result["bandwidth"]
    assert (bandwidth["op"], bandwidth["world_size"]) == ("all_reduce", 4)
    rows = bandwidth["rows"]
    assert [row["size_bytes"] for row in rows] == [8, 32, 128, 512, 2048, 4096]
    for row in rows:
        assert row["busbw_gbps"] > 0 and row["time_us"] > 0 and row["check"] == "ok"
        assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * 2 * (4 - 1) / 4)
    assert bandwidth["peak_busbw_gbps"] == max(row["busbw_gbps"] for row in rows)
    assert [(n["host"], n["transport"]["library"], n["transport"]["transport"]) for n in result["nodes"]] == [
        ("node1", "gloo", None), ("node2", "gloo", None)]

    out = proc.stdout
    # as nccl-tests prints it: what ran, then the sweep; no training line, no metric table of p_* columns
    assert "e2e-allreduce-2x2: allreduce · cpu · cpu 2x2 · fp32 · fix_hp " in out
    assert "e2e_time" not in out and "p_core" not in out and "samples in" not in out
    table = out[out.index("# all_reduce, 4 ranks, busbw = algbw x 2(n-1)/n"):].splitlines()
    assert table[1].split() == ["size(B)", "count", "type", "time_us", "algbw(GB/s)", "busbw(GB/s)"]
    assert [line.split()[0] for line in table[2:8]] == ["8", "32", "128", "512", "2048", "4096"]
    assert "node 0 (node1) transport: unknown (the harness does not read gloo's log)" in out
    assert "busbw (GB/s)" in (tmp_path / run_id / "allreduce" / "2x2" / "report.html").read_text()
