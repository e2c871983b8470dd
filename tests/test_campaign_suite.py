"""The suite file and the checks every job gets before a campaign starts
(touching no host), the same check `bench` makes, and the shipped suites."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from campaignkit import TINY, checked, write_suite

from harness import REPO_ROOT
from harness.campaign.suite import SuiteError, load_suite, parse_duration

# --------------------------------------------------------------------------- suite file


def test_suite_defaults_apply_and_jobs_win(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "2x1", "fix_hp": TINY, "repeats": 3},
                                  {"case": "vit", "config": "1x1", "vendor": "nvidia", "timeout": "90m"}],
                       defaults={"vendor": "cpu", "retries": 1, "timeout": "3h", "stall_timeout": "15m"})
    entries = load_suite(path).entries
    assert (entries[0].vendor, entries[0].repeats, entries[0].retries, entries[0].timeout_s) == ("cpu", 3, 1, 3 * 3600)
    assert entries[0].stall_timeout_s == 900
    assert (entries[1].vendor, entries[1].repeats, entries[1].timeout_s) == ("nvidia", 1, 5400)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("3h", 10800), ("1.5d", 129600), (42, 42)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_suite_field_errors_name_the_file_the_job_and_the_field(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "2x1"},
                                  {"case": "resnet50", "config": "2x1", "repeats": 0}])
    with pytest.raises(SuiteError) as raised:
        load_suite(path)
    assert str(path) in str(raised.value) and "jobs[1] (job 2).repeats" in str(raised.value)
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "2x1", "fixhp": "bs=2"}])
    with pytest.raises(SuiteError, match=r"jobs\[0\] \(job 1\)\.fixhp: unknown field"):
        load_suite(path)
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "2x1", "timeout": "soon"}])
    with pytest.raises(SuiteError, match="duration"):
        load_suite(path)


def test_a_fix_hp_typo_in_job_3_is_refused_naming_the_job_and_the_known_keys(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "2x1", "fix_hp": TINY},
                                  {"case": "resnet50", "config": "1x1", "fix_hp": TINY},
                                  {"case": "resnet50", "config": "2x1", "fix_hp": "bz=256"}])
    with pytest.raises(SuiteError) as raised:
        checked(path)
    text = str(raised.value)
    assert "1 of 3 job(s) cannot run; nothing was started" in text
    assert f"{path}: jobs[2] job 3 (resnet50 cpu 2x1 bz=256).fix_hp: unknown key 'bz'" in text
    assert "unknown key 'bz'; did you mean 'bs'?" in text and "jobs[0]" not in text


def test_every_bad_job_is_named(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"case": "resnet5", "config": "2x1"},
                                  {"case": "resnet50", "config": "3x1"},
                                  {"case": "resnet50", "config": "1x16"},
                                  {"case": "resnet50", "config": "1x1", "accelerator": "A100"},
                                  {"case": "resnet50", "config": "1x1", "vendor": "nvidiaa"},
                                  {"case": "resnet50", "config": "1x1", "reference": "missing.md"},
                                  {"case": "resnet50", "config": "1x1", "hosts": ["node9"]},
                                  {"case": "resnet50", "config": "2x1", "fix_hp": TINY}])
    with pytest.raises(SuiteError) as raised:
        checked(path)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("7 of 8 job(s) cannot run")
    assert "jobs[0] job 1" in lines[1] and ".case: unknown case 'resnet5'" in lines[1]
    assert "jobs[1] job 2" in lines[2] and "needs 3 hosts" in lines[2]
    assert "jobs[2] job 3" in lines[3] and "devices" in lines[3]
    assert "jobs[3] job 4" in lines[4] and ".accelerator: no hardware config for accelerator A100" in lines[4]
    assert "it has cpu.yaml" in lines[4]
    assert "jobs[4] job 5" in lines[5] and "nvidiaa" in lines[5]
    assert "jobs[5] job 6" in lines[6] and "missing.md" in lines[6]
    assert "jobs[6] job 7" in lines[7] and "unknown host 'node9'" in lines[7]


def test_a_good_suite_plans_every_job(tmp_path: Path) -> None:
    page = REPO_ROOT / "tests" / "fixtures" / "vendor_pages" / "nvidia-resnet50.md"
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "2x1", "fix_hp": TINY},
                                  {"case": "resnet50", "vendor": "nvidia", "config": "1x8", "hosts": ["node2"],
                                   "reference": str(page)}])
    planned = checked(path)
    assert [h.name for h in planned[0].hosts] == ["node1", "node2"]
    assert [h.name for h in planned[1].hosts] == ["node2"] and planned[1].page is not None
    assert planned[0].make_job("x-1").fix_hp == TINY
    # The page's framework is built, as with bench --repro.
    assert planned[1].pins == {"ngc_tag": "21.02-py3"}
    assert planned[1].make_job("x-2").template_overrides == {"ngc_tag": "21.02-py3"}


def test_the_campaign_cli_refuses_a_bad_suite_with_exit_2(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "2x1", "fix_hp": "bz=256"}])
    proc = subprocess.run([sys.executable, "-m", "harness", "campaign", "run", str(path), "--results",
                           str(tmp_path / "results")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "fix_hp: unknown key 'bz'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_bench_refuses_a_fix_hp_typo_and_an_accelerator_without_a_hardware_file() -> None:
    def dry(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "harness", "bench", "--dry-run", *args], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)

    typo = dry("--fix-hp", "bz=256")
    assert typo.returncode == 2 and "unknown key 'bz'" in typo.stderr and "did you mean 'bs'?" in typo.stderr
    assert typo.stdout == ""
    accel = dry("--accelerator", "A100")
    assert accel.returncode == 2 and "no hardware config for accelerator A100" in accel.stderr
    assert "it has cpu.yaml" in accel.stderr


# --------------------------------------------------------------------------- shipped suites


def test_cpu_smoke_suite_runs_on_the_shipped_inventory() -> None:
    planned = checked(REPO_ROOT / "suites" / "cpu-smoke.yaml")
    assert {p.entry.case for p in planned} == {"resnet50", "mobilenetv2", "vit", "bigtransfer"}
    assert all([h.name for h in p.hosts] == ["localhost"] for p in planned)


def test_reference_suite_reproduces_every_row_of_the_five_pages_once() -> None:
    from harness.core.validate import check_case_config
    from harness.pages.compare import pick_row
    from harness.pages.parse import read_page

    pages = sorted((REPO_ROOT / "tests" / "fixtures" / "vendor_pages").glob("*.md"))
    wanted = {(page.name, row.config_name, row.fix_hp) for page in pages for row in read_page(page).metric_rows}
    found = []
    for planned in checked(REPO_ROOT / "suites" / "reference.yaml"):
        job = planned.make_job("reference-check")
        fix_hp = check_case_config(job).fix_hp_effective() or "/"
        assert planned.page is not None and planned.pins, planned.entry.describe()
        row = pick_row(planned.page, job.nnodes, job.nproc_per_node, fix_hp)
        assert row is not None and row.fix_hp == fix_hp, planned.entry.describe()
        found.append((planned.entry.reference.name, row.config_name, row.fix_hp))
    assert sorted(found) == sorted(wanted) and len(found) == len(wanted) == 18


def test_the_bandwidth_gate_is_checked_for_every_job_before_any_starts(tmp_path: Path) -> None:
    jobs = [{"case": "resnet50", "config": "2x1", "fix_hp": TINY}]
    typo = write_suite(tmp_path, jobs, gates={"min_busbw_gbps": 10, "busbw_fix_hp": "maxbytes=4096"})
    with pytest.raises(SuiteError) as raised:
        checked(typo)
    assert "maxbytes" in str(raised.value) and "max_bytes" in str(raised.value)
    assert len(checked(write_suite(tmp_path, jobs, gates={"min_busbw_gbps": 10}))) == 1
    with pytest.raises(SuiteError, match="gates.min_busbw_gbps"):
        checked(write_suite(tmp_path, jobs, gates={"min_busbw_gbps": 0}))
