"""A small scale run: the allreduce case on 4 throw-away sshd hosts
(tests/spare_sshd.py), one process per host, all on this machine's one Docker
engine. The larger sizes are measured by bench/scale.py (issue 11, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from test_faults import containers_of

from harness import REPO_ROOT

pytest_plugins = ["spare_sshd"]
if TYPE_CHECKING:
    from conftest import TestInfra
    from spare_sshd import SpareSshd

NNODES = 4
SWEEP = "max_bytes=1024,min_bytes=8,step_factor=4,warmup_iters=1,iters=2"  # 8, 32, 128, 512 bytes
PHASES = ("preflight", "allocate", "image", "environment", "launch", "wait", "collect", "parse")


def test_four_hosts_one_process_each(spare_sshd: Callable[..., Any], make_hosts_yaml: Callable[..., Path],
                                     infra: TestInfra, tmp_path: Path) -> None:
    hosts: list[SpareSshd] = spare_sshd(count=NNODES)
    known = tmp_path / "known_hosts"
    lines = infra.known_hosts.read_text(encoding="utf-8").splitlines()
    known.write_text("\n".join([*lines, *(h.known_hosts_line for h in hosts)]) + "\n", encoding="utf-8")
    names = [f"s{i}" for i in range(NNODES)]
    hosts_yaml = make_hosts_yaml(hosts=[], extra_hosts=[h.inventory_entry(n) for h, n in zip(hosts, names)],
                                 cluster_overrides={"known_hosts": str(known)}, devices=1)
    run_id = "scale-4x1"
    results = tmp_path / "results"
    try:
        done = subprocess.run([sys.executable, "-m", "harness", "bench", "--case", "allreduce", "--vendor", "cpu",
                               "--config", f"{NNODES}x1", "--hosts", str(hosts_yaml), "--results", str(results),
                               "--run-id", run_id, "--fix-hp", SWEEP, "--timeout", "400"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        out = results / run_id / "allreduce" / f"{NNODES}x1"
        result = json.loads((out / "results.json").read_text())
        assert result["status"] == "success" and result["failure_kind"] is None
        assert (result["nnodes"], result["nproc_per_node"]) == (NNODES, 1)
        assert result["metrics"]["world_size"] == NNODES
        assert set(PHASES) <= set(result["phase_seconds"])

        nodes = result["nodes"]
        assert [(n["node_rank"], n["host"]) for n in nodes] == list(enumerate(names))
        for node in nodes:
            rank = node["node_rank"]
            assert node["collected"] and node["exit_code"] == 0, json.dumps(node)[:3000]
            folder = out / f"{node['host']}_noderank{rank}"
            assert node["log_dir"] == str(folder)
            events = (folder / "container" / f"events_rank{rank}.log").read_text()
            assert '"key": "world"' in events and '"world_size": 4' in events
            assert (folder / "container.log").is_file()
        assert sorted(result["environment"]) == names
        assert result["left_on_hosts"] == [] and result["lost_hosts"] == []
        assert containers_of(run_id) == []
    finally:
        for cid in containers_of(run_id):
            subprocess.run(["docker", "rm", "--force", cid], capture_output=True, timeout=60, check=False)
