"""The run tables as a person reads them: cells broken between tokens only
(fix_hp after a comma, 配置 whole), the all-reduce case as its sweep table
(golden), a refused bench that names no folder, a taken run id refused by a dry
run, and the closest known name for a mistyped key."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from cases.closest import closest, unknown_key
from harness import REPO_ROOT
from harness.core.results import Metrics, NodeOutcome, RunResult
from harness.errors import UserError
from harness.report.fit import TokenCell, fold, print_fitting
from harness.report.tables import print_results

GOLDEN = Path(__file__).parent / "golden"
RECORDED = Path(__file__).parent / "fixtures" / "runs"
FIX_HP = "bs=4,max_steps=30,image_size=32,num_workers=2,lr=0.001"


def _training(run_id: str, fix_hp: str = FIX_HP) -> RunResult:
    return RunResult(
        run_id=run_id, case="resnet50", vendor="cpu", accelerator="cpu", nnodes=1, nproc_per_node=1,
        precision="fp32", fix_hp=fix_hp, status="success",
        metrics=Metrics(e2e_time=61.2, p_whole=80.1, p_train=85.3, p_core=90.4, acc=None, world_size=1,
                        samples=120, steps=30, step_s_p50=0.04, step_s_p90=0.05, step_s_max=0.07),
        nodes=[NodeOutcome(host="localhost", node_rank=0, container="c", exit_code=0, log_dir="/r/n0")])


def test_fold_breaks_after_commas_and_at_spaces_only() -> None:
    assert fold(FIX_HP, 20) == ["bs=4,max_steps=30,", "image_size=32,", "num_workers=2,", "lr=0.001"]
    assert fold("单机单卡（1x1）", 4) == ["单机单卡（1x1）"]  # one token wider than the line: whole, on its own
    assert fold("within noise (±2%)", 12) == ["within noise", "(±2%)"]
    assert fold("a\nb c", 80) == ["a", "b c"]


def test_a_cjk_cell_is_measured_in_terminal_cells_and_kept_whole() -> None:
    table = Table()
    table.add_column("配置")
    table.add_column("fix_hp")
    table.add_row(TokenCell("单机单卡（1x1）"), TokenCell(FIX_HP))
    out = io.StringIO()
    print_fitting(Console(file=out, width=36, color_system=None), table)
    text = out.getvalue()
    assert "单机单卡（1x1）" in text  # 15 cells wide, never `（1x1` / `）`
    assert max(len(line) + sum(1 for ch in line if "\u3000" <= ch <= "\uffef") for line in text.splitlines()) <= 36
    assert [piece for piece in re.findall(r"[^\s│]+", text) if "=" in piece] == [
        "bs=4,", "max_steps=30,", "image_size=32,", "num_workers=2,", "lr=0.001"]


def test_the_metric_table_folds_fix_hp_between_tokens_at_a_narrow_width() -> None:
    out = io.StringIO()
    print_results([_training("20261206-010000-aaaaaa")], Console(file=out, width=120, color_system=None),
                  verbose=False)
    text = out.getvalue()
    pieces = [piece for piece in re.findall(r"[^\s│]+", text) if "=" in piece]
    assert "".join(pieces) == FIX_HP and len(pieces) > 1 and all(piece.endswith(",") for piece in pieces[:-1])
    assert "20261206-010000-aaaaaa" in text and "…" not in text


def _sweep_text(verbose: bool) -> str:
    result = RunResult.model_validate_json((RECORDED / "allreduce_1x2.json").read_text(encoding="utf-8"))
    out = io.StringIO()
    print_results([result], Console(file=out, width=120, color_system=None), verbose=verbose)
    return out.getvalue()


def test_the_allreduce_case_prints_like_nccl_tests_golden() -> None:
    """From a recorded results.json of a real gloo run (cases/allreduce, 1x2,
    max_bytes=65536, step_factor=4): its sweep, no training line, no p_* columns."""
    text = _sweep_text(verbose=True)
    golden = GOLDEN / "allreduce_1x2_terminal.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    for absent in ("samples in", "step time", "p_core", "p_whole", "e2e_time", "MFU"):
        assert absent not in text
    sizes = [line.split()[0] for line in text.splitlines() if re.match(r"^\s*\d+\s+\d+\s+float32", line)]
    assert sizes == ["8", "32", "128", "512", "2048", "8192", "32768", "65536"]  # ends at max_bytes


def test_a_sweep_beside_a_training_run_keeps_both_apart() -> None:
    result = RunResult.model_validate_json((RECORDED / "allreduce_1x2.json").read_text(encoding="utf-8"))
    out = io.StringIO()
    print_results([_training("train-1"), result], Console(file=out, width=220, color_system=None), verbose=True)
    text = out.getvalue()
    table_rows = [line for line in text.splitlines() if line.startswith("│")]
    assert any("train-1" in line for line in table_rows)
    assert not any(result.run_id in line for line in table_rows)  # the sweep has no row of p_* columns
    assert "train-1: world size 1 · 120 samples in 30 steps" in text
    assert "# all_reduce, 2 ranks, busbw = algbw x 2(n-1)/n" in text


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "bench", "--results", str(tmp_path / "results"),
                           "--hosts", str(GOLDEN / "hosts_2x2.yaml"), *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_a_dry_run_refuses_a_taken_run_id_as_the_run_would(tmp_path: Path) -> None:
    taken = tmp_path / "results" / "night-1"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("an earlier run\n")
    before = sorted(p.name for p in (tmp_path / "results").rglob("*"))
    proc = _bench(tmp_path, "--dry-run", "--run-id", "night-1", "--config", "2x2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "run id night-1 is taken" in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in (tmp_path / "results").rglob("*")) == before
    fresh = _bench(tmp_path, "--dry-run", "--run-id", "night-2", "--config", "2x2")
    assert fresh.returncode == 0 and "night-2" in fresh.stdout
    assert not (tmp_path / "results" / "night-2").exists()


def test_a_bench_refused_at_preflight_names_no_results_folder(tmp_path: Path) -> None:
    """This machine as the only host (local transport, bare payload) with a Python
    that does not exist: the preflight refuses before anything starts, and the
    folder the run would have written is never mentioned."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(
        "cluster:\n  master_port: 29671\n  payload: {type: bare, python: /nonexistent/bin/python}\n"
        f"hosts:\n  - {{name: here, address: 127.0.0.1, transport: local, devices: 1, work_dir: {tmp_path / 'work'}}}\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "bench", "--results", str(tmp_path / "results"),
                           "--hosts", str(hosts), "--run-id", "refused-1", "--fix-hp", "bs=4"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "run refused-1: resnet50 on cpu 1x1" in proc.stderr and "/nonexistent/bin/python" in proc.stderr
    assert "results" not in proc.stderr.replace(str(hosts), "") and "->" not in proc.stderr
    assert not (tmp_path / "results" / "refused-1").exists()


@pytest.mark.parametrize(("typed", "known", "expected"), [
    ("bz", ["bs", "lr", "batch_size"], "bs"), ("imagesize", ["image_size", "seed"], "image_size"),
    ("MAX_STEP", ["max_steps", "max_samples"], "max_steps"), ("zzz", ["bs", "lr"], None)])
def test_the_closest_known_name(typed: str, known: list[str], expected: str | None) -> None:
    assert closest(typed, known) == expected


def test_an_unknown_fix_hp_key_names_the_closest_key_only(tmp_path: Path) -> None:
    proc = _bench(tmp_path, "--dry-run", "--fix-hp", "bz=4", "--config", "2x2")
    assert proc.returncode == 2 and "unknown key 'bz'; did you mean 'bs'?" in proc.stderr
    assert "known keys" not in proc.stderr
    far = _bench(tmp_path, "--dry-run", "--fix-hp", "qqqq=4", "--config", "2x2")
    assert far.returncode == 2 and "unknown key 'qqqq'; known keys: bs, lr, max_epochs, batch_size" in far.stderr
    assert unknown_key("zz", []) == "unknown key 'zz'; known keys: "


def test_an_unknown_inventory_field_names_the_closest_field(tmp_path: Path) -> None:
    from harness.core.inventory import load_inventory

    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("cluster: {master_prot: 29500}\nhosts:\n  - {name: a, address: 127.0.0.1, transport: local}\n")
    with pytest.raises(UserError, match=r"cluster\.master_prot: unknown field; did you mean 'master_port'\?"):
        load_inventory(hosts)
    hosts.write_text("hosts:\n  - {name: a, address: 127.0.0.1, transport: local, qqqqqq: 1}\n")
    with pytest.raises(UserError, match=r"hosts\.a\.qqqqqq: unknown field; expected one of: name, address, "):
        load_inventory(hosts)


def test_make_bench_echoes_the_command_on_one_clean_line(tmp_path: Path) -> None:
    proc = subprocess.run(["make", "--no-print-directory", "-o", "setup", "bench", "DRY_RUN=1", "CONFIG=2x2",
                           f"HOSTS={GOLDEN / 'hosts_2x2.yaml'}", "RUN_ID=make-echo-1", "FIX_HP=bs=4,lr=0.1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = proc.stdout.splitlines()[:2]
    assert first == (f".venv/bin/python -m harness bench --case 'resnet50' --vendor 'cpu' --config '2x2' --hosts "
                     f"'{GOLDEN / 'hosts_2x2.yaml'}' --fix-hp 'bs=4,lr=0.1' --run-id 'make-echo-1' --dry-run")
    assert second.startswith("run make-echo-1: case=resnet50")  # the dry run itself follows at once
    assert "\\" not in proc.stdout.split("\n", 1)[0] and first.strip() == first


def test_the_phase_timings_line_up_whatever_the_phase() -> None:
    from harness.core.runner import PHASES, PhaseClock

    out = io.StringIO()
    clock = PhaseClock(Console(file=out, width=80, color_system=None))
    for name in PHASES:
        with clock.phase(name):
            pass
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == list(PHASES)
    assert len({len(line) for line in lines}) == 1 and len({line.index(".") for line in lines}) == 1
