"""The markers tests/conftest.py derives from the fixtures a test uses (MARKERS): what
`make test-fast` leaves out comes from them, the tests of the SSH test hosts share
one pytest-xdist worker and the Slurm cluster's another. Checked on real test modules,
collected by a pytest of their own with a probe plugin that prints each test's markers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import REPO_ROOT

# Print "nodeid<TAB>markers<TAB>xdist groups" for every test left after -m.
PROBE = '''
def pytest_collection_finish(session):
    for item in session.items:
        names = sorted({mark.name for mark in item.iter_markers()} - {"xdist_group", "parametrize", "usefixtures"})
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name")) for mark in item.iter_markers("xdist_group")})
        print("PROBE", item.nodeid, ",".join(names), ",".join(groups), sep="\\t")
'''

MODULES = ["tests/test_progress_e2e.py", "tests/test_allreduce.py", "tests/cases/test_cases_runs.py",
           "tests/test_slurm.py"]


def collect(tmp_path: Path, expression: str) -> dict[str, tuple[set[str], set[str]]]:
    (tmp_path / "marker_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-p", "marker_probe", "-m", expression, *MODULES],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE\t"):
            _, nodeid, names, groups = line.split("\t")
            found[nodeid] = (set(filter(None, names.split(","))), set(filter(None, groups.split(","))))
    return found


def test_payload_and_hosts_markers_come_from_the_fixtures_and_only_hosts_share_a_worker(tmp_path: Path) -> None:
    found = collect(tmp_path, "payload or hosts or slurm")
    payload = {nodeid for nodeid, (names, _) in found.items() if "payload" in names}
    hosts = {nodeid for nodeid, (names, _) in found.items() if names & {"hosts", "slurm"}}
    # Through usefixtures, a parameter of the test and a fixture of tests/cases/conftest.py (torchrun, standalone).
    assert "tests/test_allreduce.py::test_a_gloo_sweep_reports_every_size_with_bus_bandwidth[2]" in payload
    assert "tests/test_progress_e2e.py::test_local_bare_terminal_progress_is_redrawn_in_place" in payload
    assert "tests/cases/test_cases_runs.py::test_ddp_synthetic_run_writes_a_complete_record[resnet50]" in payload
    assert "tests/cases/test_cases_runs.py::test_bad_data_dir_exits_2_with_one_message" in payload
    # Through make_hosts_yaml -> infra.
    assert "tests/test_progress_e2e.py::test_through_a_pipe_progress_is_timestamped_plain_lines" in hosts
    # Unit tests carry none of them, so -m leaves them out.
    assert "tests/test_allreduce.py::test_the_default_sweep_is_8_bytes_to_256_mib_doubling" not in found
    assert "tests/test_allreduce.py::test_the_table_of_a_run_without_bandwidth_events_is_none" not in found
    # The test hosts are shared: one worker runs their tests, another the Slurm cluster's;
    # payload tests run anywhere.
    slurm = {nodeid for nodeid, (names, _) in found.items() if "slurm" in names}
    assert "tests/test_slurm.py::test_contract_a_2x2_run_end_to_end[slurm-bare]" in slurm
    assert "tests/test_slurm.py::test_contract_a_2x2_run_end_to_end_over_ssh" in hosts - slurm
    assert all(found[nodeid][1] == {"slurm"} for nodeid in slurm)
    assert all(found[nodeid][1] == {"testhosts"} for nodeid in hosts - slurm)
    assert all(found[nodeid][1] == set() for nodeid in payload - hosts)
