"""Bad input ends with exit status 2, one message naming what is wrong, and a
run_stop failed event; nothing is trained. Runs cases.run.main in-process."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
from casekit import make_jpeg_dataset, read_events

from cases.run import main

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


@pytest.fixture(autouse=True)
def _alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DIST_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_jpeg_dataset(tmp_path_factory.mktemp("tiny"), per_class_train=2, per_class_val=1)


def run(tmp_path: Path, *extra: str, case: str = "mobilenetv2", vendor: str = "cpu") -> List[str]:
    return ["--case", case, "--vendor", vendor, "--config", "cpux1x1",
            "--log-dir", str(tmp_path / "logs"), *extra]


def expect_exit_2(argv: List[str], capsys: pytest.CaptureFixture, tmp_path: Path, *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    events = read_events(tmp_path / "logs" / "events_rank0.log")
    assert events.keys()[0] == "process_start" and "train_start" not in events.keys()
    stop = events.one("run_stop")["value"]
    assert stop["status"] == "failed" and stop["error"] == err.strip()[len("error: "):]
    return err


def test_missing_data_dir(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    expect_exit_2(run(tmp_path, "--data", str(missing)), capsys, tmp_path, str(missing), "does not exist")


def test_missing_train_split(tmp_path: Path, capsys) -> None:
    (tmp_path / "data" / "val" / "n1").mkdir(parents=True)
    expect_exit_2(run(tmp_path, "--data", str(tmp_path / "data")), capsys, tmp_path,
                  str(tmp_path / "data" / "train"), "is missing")


def test_missing_val_split(tmp_path: Path, capsys, dataset: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(dataset / "train")
    expect_exit_2(run(tmp_path, "--data", str(data), "--fix-hp", "num_classes=4"), capsys, tmp_path,
                  str(data / "val"), "is missing")


def test_val_classes_must_match_train(tmp_path: Path, capsys, dataset: Path) -> None:
    data = tmp_path / "data"
    (data / "val").mkdir(parents=True)
    (data / "train").symlink_to(dataset / "train")
    (data / "val" / "n00000001").symlink_to(dataset / "val" / "n00000001")
    expect_exit_2(run(tmp_path, "--data", str(data), "--fix-hp", "num_classes=4"), capsys, tmp_path,
                  "class folders differ", "n00000002")


def test_class_count_must_match_num_classes(tmp_path: Path, capsys, dataset: Path) -> None:
    expect_exit_2(run(tmp_path, "--data", str(dataset)), capsys, tmp_path,
                  "4 class folders but num_classes is 10", "num_classes=4")


def test_unknown_case_and_vendor(tmp_path: Path, capsys) -> None:
    expect_exit_2(run(tmp_path, case="resnet51"), capsys, tmp_path, "unknown case 'resnet51'", "resnet50")
    (tmp_path / "logs" / "events_rank0.log").unlink()
    expect_exit_2(run(tmp_path, vendor="acme"), capsys, tmp_path, "unknown vendor 'acme'", "nvidia")


def test_bad_fix_hp(tmp_path: Path, capsys) -> None:
    expect_exit_2(run(tmp_path, "--fix-hp", "bs=8,learning_rate=0.1"), capsys, tmp_path,
                  "--fix-hp: unknown key 'learning_rate'", "known keys")


def test_vendor_without_its_device(tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a cuda device is visible")
    expect_exit_2(run(tmp_path, vendor="nvidia"), capsys, tmp_path, "vendor nvidia", "no cuda device")


def test_too_few_samples_for_one_global_batch(tmp_path: Path, capsys) -> None:
    expect_exit_2(run(tmp_path, "--fix-hp", "synthetic_samples=3"), capsys, tmp_path,
                  "synthetic_samples: 3 samples, fewer than one global batch")


def test_missing_bigtransfer_weights(tmp_path: Path, capsys) -> None:
    npz = tmp_path / "BiT-M-R152x2.npz"
    expect_exit_2(run(tmp_path, "--fix-hp", f"pretrained_npz={npz}", case="bigtransfer"), capsys,
                  tmp_path, f"pretrained_npz: weights file {npz} does not exist", "pretrained_npz: null")
    config = read_events(tmp_path / "logs" / "events_rank0.log").one("config")["value"]
    assert config["pretrained"] is True and config["pretrained_file"] == str(npz)


def test_relative_weights_path_is_looked_up_under_data(tmp_path: Path, capsys, dataset: Path) -> None:
    expect_exit_2(run(tmp_path, "--data", str(dataset), "--fix-hp",
                      "num_classes=4,pretrained_npz=BiT-M-R152x2.npz", case="bigtransfer"),
                  capsys, tmp_path, str(dataset / "BiT-M-R152x2.npz"))


def test_single_process_run_succeeds_and_says_so(tmp_path: Path, capsys) -> None:
    assert main(run(tmp_path, "--fix-hp", "synthetic_samples=8,precision=amp")) == 0
    events = read_events(tmp_path / "logs" / "events_rank0.log")
    world = events.one("world")["value"]
    assert (world["world_size"], world["distributed"], world["backend"]) == (1, False, "none")
    assert (world["precision_requested"], world["precision"]) == ("amp", "bf16")  # honest cpu fallback
    assert "bf16" in world["precision_note"]
    assert events.one("run_stop")["value"] == {"status": "success"}
    assert ':::BENCH {"time_ms"' in capsys.readouterr().out  # rank 0 echoes to stdout
