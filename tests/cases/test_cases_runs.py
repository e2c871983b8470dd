"""End-to-end: real DDP (2 processes, gloo) under torchrun, parsed event logs."""

from __future__ import annotations

from pathlib import Path

import pytest
from casekit import metrics, read_events

from cases.protocol import EVENT_KEYS as KEYS

NON_ZERO_RANK_KEYS = {"process_start", "world", "train_start", "step", "heartbeat", "train_stop", "summary", "run_stop"}
# tiny synthetic runs: 64 samples / (4 per device x 2) = 8 steps, plus a small eval
SYNTHETIC = "synthetic_samples=64,synthetic_val_samples=10,log_every=4"


@pytest.mark.parametrize("case", ["resnet50", "mobilenetv2", "vit", "bigtransfer"])
def test_ddp_synthetic_run_writes_a_complete_record(case: str, torchrun, tmp_path: Path) -> None:
    done = torchrun(case, fix_hp=SYNTHETIC)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = read_events(tmp_path / "logs" / "events_rank0.log")
    rank1 = read_events(tmp_path / "logs" / "events_rank1.log")

    assert set(KEYS) <= set(rank0.keys())
    assert NON_ZERO_RANK_KEYS <= set(rank1.keys())
    assert rank0.keys()[0] == "process_start" and rank0.keys()[-1] == "run_stop"
    # Every rank logs its steps (the stall watchdog watches each); the metrics use rank 0's.
    assert [s["value"]["step"] for s in rank1.all("step")] == [s["value"]["step"] for s in rank0.all("step")]
    for events, rank in ((rank0, 0), (rank1, 1)):
        world = events.one("world")["value"]
        assert (world["world_size"], world["rank"], world["backend"]) == (2, rank, "gloo")
        assert world["precision"] == "fp32" and world["device"] == "cpu"
        assert events.one("run_stop")["value"] == {"status": "success"}

    config = rank0.one("config")["value"]
    assert config["case"] == case and config["synthetic"] is True
    assert config["hardware_file"].endswith("configs/cpu/cpu.yaml")
    assert config["fix_hp"].startswith("bs=4,")
    assert config["pretrained"] is False

    steps = rank0.all("step")
    assert len(steps) == 8 and [s["value"]["step"] for s in steps] == list(range(1, 9))
    assert all(s["value"]["samples"] == 8 for s in steps)
    assert all(s["value"]["steps_total"] == 8 for s in steps)  # the budget the controller's time left uses
    assert all(0 < s["value"]["core_s"] <= s["value"]["step_s"] for s in steps)
    # Each rank's step splits into data, its own compute (DDP's hook marks the end
    # of backward apart from the all-reduce) and the rest; they add up to the step.
    for events in (rank0, rank1):
        for step in (s["value"] for s in events.all("step")):
            assert 0 < step["compute_s"] <= step["core_s"] and step["data_s"] >= 0 and step["comm_s"] >= 0
            assert step["data_s"] + step["compute_s"] + step["comm_s"] == pytest.approx(step["step_s"], abs=1e-6)
        summary_of = events.one("summary")["value"]
        assert (summary_of["compute_timer"], summary_of["compute_excludes_allreduce"]) == ("wall clock", True)
    stop = rank0.one("train_stop")["value"]
    assert (stop["samples"], stop["steps"], stop["stop_reason"]) == (64, 8, "max_epochs")
    assert rank0.one("eval_stop")["value"]["samples"] == 10

    summary = rank0.one("summary")["value"]
    assert summary["core_s"] == pytest.approx(sum(s["value"]["core_s"] for s in steps))
    assert summary["core_s"] > 0 and rank1.one("summary")["value"]["core_s"] > 0
    assert 0 < summary["peak_mem_gib"] < summary["mem_total_gib"]
    assert summary["mem_source"].startswith("getrusage")
    assert summary["step_s_p50"] <= summary["step_s_p90"] <= summary["step_s_max"]

    m = metrics(rank0)
    assert m.samples == 64
    assert m.p_core >= m.p_train >= m.p_whole > 0
    assert m.e2e_s > 0


def test_accuracy_rises_above_chance_on_a_learnable_dataset(torchrun, jpeg_dataset: Path,
                                                             tmp_path: Path) -> None:
    # bigtransfer's group norm makes eval-mode predictions match training from the
    # first epoch; 160 images / (8 x 2) = 10 steps per epoch.
    done = torchrun("bigtransfer", data=jpeg_dataset,
                    fix_hp="num_classes=4,bs=8,lr=0.05,warmup_epochs=0,epochs=4,target_acc=90")
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = read_events(tmp_path / "logs" / "events_rank0.log")
    rank1 = read_events(tmp_path / "logs" / "events_rank1.log")

    evals0 = [e["value"] for e in rank0.all("eval_stop")]
    evals1 = [e["value"] for e in rank1.all("eval_stop")]
    assert evals0 == evals1, "acc is all-reduced: every rank reports the same figure"
    assert all(e["samples"] == 41 for e in evals0), "every val image counted once (21 + 20)"
    assert evals0[-1]["acc"] >= 90 > 25  # chance is 25 %
    assert rank0.one("train_stop")["value"]["stop_reason"] == "target_acc"
    assert rank0.one("config")["value"]["data"] == str(jpeg_dataset)
    m = metrics(rank0)
    assert m.p_core >= m.p_train >= m.p_whole > 0
    assert m.p_train > m.p_whole  # the evals are taken out


def test_injected_failure_exits_non_zero_and_records_the_error(torchrun, tmp_path: Path) -> None:
    done = torchrun("mobilenetv2", fix_hp="synthetic_samples=64,fail_rank=1,fail_step=2")
    assert done.returncode != 0
    rank1 = read_events(tmp_path / "logs" / "events_rank1.log")
    stop = rank1.one("run_stop")["value"]
    assert stop["status"] == "failed"
    assert stop["error"] == "RuntimeError: injected failure at step 2 on rank 1"
    assert "injected failure at step 2 on rank 1" in done.stdout + done.stderr  # the traceback
    rank0 = read_events(tmp_path / "logs" / "events_rank0.log")
    assert {"status": "success"} not in [e["value"] for e in rank0.all("run_stop")]


def test_bad_data_dir_exits_2_with_one_message(standalone, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-imagenet"
    done = standalone("--case", "mobilenetv2", "--vendor", "cpu", "--config", "cpux1x1",
                      "--data", str(missing), "--log-dir", str(tmp_path / "logs"))
    assert done.returncode == 2
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    stop = read_events(tmp_path / "logs" / "events_rank0.log").one("run_stop")["value"]
    assert stop["status"] == "failed" and str(missing) in stop["error"]
