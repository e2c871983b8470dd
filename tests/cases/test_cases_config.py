"""Config layering, fix_hp parsing and the errors for bad keys."""

from __future__ import annotations

from pathlib import Path

import casekit  # noqa: F401  (puts the repo on sys.path)
import pytest
import yaml

from cases.case import available_cases, load_case
from cases.config import CASES_DIR, load_config, parse_config_name, parse_fix_hp
from cases.errors import CaseError, ConfigError
from cases.resnet50 import ResNet50Config
from cases.schedule import LrSchedule


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """A copy of resnet50's defaults with two hardware files for vendor 'acme'."""
    defaults = yaml.safe_load((CASES_DIR / "resnet50" / "defaults.yaml").read_text())
    defaults.update(batch_size=1, momentum=0.5, weight_decay=0.25, seed=1)
    (tmp_path / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    acme = tmp_path / "configs" / "acme"
    acme.mkdir(parents=True)
    (acme / "X1x1x8.yaml").write_text("batch_size: 2\nmomentum: 0.6\n")
    (acme / "X1.yaml").write_text("batch_size: 3\n")
    return tmp_path


def load(case_dir: Path, config: str = "X1x1x8", fix_hp: str = "", vendor: str = "acme"):
    return load_config("resnet50", ResNet50Config, vendor, config, fix_hp, case_dir=case_dir)


def test_layers_apply_in_order_defaults_hardware_fix_hp(case_dir: Path) -> None:
    loaded = load(case_dir, fix_hp="bs=4")
    values = loaded.values
    assert values.batch_size == 4  # defaults 1 -> hardware 2 -> fix_hp 4
    assert values.momentum == 0.6  # defaults 0.5 -> hardware 0.6
    assert values.weight_decay == 0.25  # defaults only
    assert loaded.files == [str(case_dir / "defaults.yaml"), str(case_dir / "configs/acme/X1x1x8.yaml")]
    assert loaded.fix_hp == {"batch_size": 4}
    event = loaded.as_event()
    assert event["batch_size"] == 4 and event["config_files"] == loaded.files
    assert event["hardware_file_found"] is True


def test_accelerator_file_is_the_fallback_and_none_is_recorded(case_dir: Path) -> None:
    fallback = load(case_dir, config="X1x2x8")
    assert fallback.values.batch_size == 3
    assert fallback.hardware_file == str(case_dir / "configs/acme/X1.yaml")
    assert (fallback.name.accelerator, fallback.name.nnodes, fallback.name.nproc) == ("X1", 2, 8)

    none = load(case_dir, config="Y9x1x1")
    assert none.hardware_file is None and none.values.batch_size == 1
    assert none.files == [str(case_dir / "defaults.yaml")]
    assert none.as_event()["hardware_file_found"] is False
    assert load(case_dir, vendor="other").hardware_file is None


def test_fix_hp_values_follow_yaml_rules_and_aliases() -> None:
    parsed = parse_fix_hp("bs=256, lr=0.72,max_epochs=3,eval=false,label_smoothing=1.0e-1,"
                          "lr_milestones=[30,60],max_steps=null,lr_schedule=cosine")
    assert parsed == {"batch_size": 256, "lr": 0.72, "epochs": 3, "eval": False, "label_smoothing": 0.1,
                      "lr_milestones": [30, 60], "max_steps": None, "lr_schedule": "cosine"}
    assert isinstance(parsed["batch_size"], int) and isinstance(parsed["lr"], float)
    assert parse_fix_hp("") == {} and parse_fix_hp(None) == {} and parse_fix_hp("bs=8,") == {"batch_size": 8}


@pytest.mark.parametrize("text, message", [
    ("bs", "expected key=value"),
    ("=3", "expected key=value"),
    ("lr=", "empty value"),
    ("bs=8,batch_size=16", "given twice"),
    ("lr=[1,", "cannot read value"),
])
def test_malformed_fix_hp_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_fix_hp(text)
    assert str(caught.value).startswith("--fix-hp: ")


def test_effective_fix_hp_is_written_like_the_vendor_pages(case_dir: Path) -> None:
    assert load(case_dir).fix_hp_effective() == "bs=2"  # from the hardware file
    assert load(case_dir, fix_hp="lr=0.8,bs=256").fix_hp_effective() == "lr=0.8,bs=256"
    assert load(case_dir, config="Y9x1x1").fix_hp_effective() == ""
    assert load(case_dir, config="Y9x1x1", fix_hp="lr_milestones=[1,2]").fix_hp_effective() == "lr_milestones=[1.0,2.0]"


def test_unknown_key_in_a_hardware_file_names_key_file_and_known_keys(case_dir: Path) -> None:
    (case_dir / "configs/acme/X1x1x8.yaml").write_text("batch_szie: 2\n")
    with pytest.raises(ConfigError) as caught:
        load(case_dir)
    message = str(caught.value)
    assert "'batch_szie'" in message and str(case_dir / "configs/acme/X1x1x8.yaml") in message
    assert "did you mean 'batch_size'?" in message and "known keys" not in message
    (case_dir / "configs/acme/X1x1x8.yaml").write_text("qqqq: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'qqqq'; known keys: batch_size, lr, base_lr"):
        load(case_dir)


def test_unknown_key_in_fix_hp_names_key_source_and_aliases(case_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(case_dir, fix_hp="bz=8")
    message = str(caught.value)
    assert message == "--fix-hp: unknown key 'bz'; did you mean 'bs'?"
    with pytest.raises(ConfigError, match=r"^--fix-hp: unknown key 'qqqq'; known keys: bs, lr, .*batch_size"):
        load(case_dir, fix_hp="qqqq=8")


def test_wrong_types_name_the_key_and_the_source(case_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--fix-hp: batch_size: .*'many'"):
        load(case_dir, fix_hp="bs=many")
    with pytest.raises(ConfigError, match=r"^--fix-hp: precision: .*'fp8'"):
        load(case_dir, fix_hp="precision=fp8")
    (case_dir / "configs/acme/X1x1x8.yaml").write_text("batch_size: -1\n")
    with pytest.raises(ConfigError, match=r"X1x1x8.yaml: batch_size: .*greater than 0"):
        load(case_dir)


def test_defaults_must_list_every_key(case_dir: Path) -> None:
    defaults = yaml.safe_load((case_dir / "defaults.yaml").read_text())
    del defaults["seed"]
    (case_dir / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    with pytest.raises(ConfigError, match="defaults.yaml: key 'seed' is missing"):
        load(case_dir)


def test_config_names() -> None:
    name = parse_config_name("BI-V100x2x8")
    assert (name.accelerator, name.nnodes, name.nproc) == ("BI-V100", 2, 8)
    assert parse_config_name("cpu").nnodes is None
    for bad in ("../x1x1", "a/b", ""):
        with pytest.raises(ConfigError):
            parse_config_name(bad)


# the reference pages' rows: (case, vendor, config, fix_hp on the command line, expected fix_hp)
REFERENCE_ROWS = [
    ("resnet50", "nvidia", "A100x1x8", "", ""),
    ("resnet50", "nvidia", "A100x1x8", "bs=256,lr=0.8", "bs=256,lr=0.8"),
    ("resnet50", "nvidia", "A100x1x1", "", "bs=256,lr=0.8"),
    ("resnet50", "nvidia", "A100x2x8", "", "bs=256,lr=0.8"),
    ("mobilenetv2", "iluvatar", "BI-V100x1x8", "", ""),
    ("mobilenetv2", "iluvatar", "BI-V100x1x8", "bs=256,lr=0.72", "bs=256,lr=0.72"),
    ("mobilenetv2", "iluvatar", "BI-V100x1x1", "", "bs=256,lr=0.72"),
    ("mobilenetv2", "iluvatar", "BI-V100x2x8", "", "bs=256,lr=0.72"),
    ("mobilenetv2", "kunlunxin", "R300x1x1", "", ""),
    ("mobilenetv2", "kunlunxin", "R300x1x8", "", "bs=256,lr=0.36"),
    ("mobilenetv2", "kunlunxin", "R300x2x8", "", "bs=256,lr=0.72"),
    ("vit", "nvidia", "A100x1x8", "", ""),
    ("vit", "nvidia", "A100x1x1", "", "bs=256"),
    ("vit", "nvidia", "A100x2x8", "", "bs=256"),
    ("bigtransfer", "nvidia", "A100x1x8", "", ""),
    ("bigtransfer", "nvidia", "A100x1x8", "bs=20", "bs=20"),
    ("bigtransfer", "nvidia", "A100x1x1", "", "bs=16"),
    ("bigtransfer", "nvidia", "A100x2x8", "", "bs=20"),
]


@pytest.mark.parametrize("case, vendor, config, fix_hp, expected", REFERENCE_ROWS)
def test_every_reference_row_has_a_config(case: str, vendor: str, config: str, fix_hp: str,
                                          expected: str) -> None:
    spec = load_case(case)
    loaded = load_config(case, spec.config, vendor, config, fix_hp)
    assert loaded.hardware_file == str(CASES_DIR / case / "configs" / vendor / f"{config}.yaml")
    assert loaded.fix_hp_effective() == expected


def test_every_shipped_config_file_is_valid() -> None:
    files = sorted(CASES_DIR.glob("*/configs/*/*.yaml"))
    # 15 reference-page configs + 4 cpu ones + allreduce's 4 (one per vendor) + mobilenetv2's A100 1x1
    # (bench/gpu_check.sh runs the four seed cases 1x1 on NVIDIA)
    assert len(files) == 24
    for path in files:
        case, vendor = path.parts[-4], path.parts[-2]
        load_config(case, load_case(case).config, vendor, path.stem, "")


def test_recipes_scale_the_learning_rate_with_the_global_batch() -> None:
    def lr(case: str, vendor: str, config: str, world: int, fix_hp: str = "") -> float:
        loaded = load_config(case, load_case(case).config, vendor, config, fix_hp)
        return loaded.values.effective_lr(world)

    assert lr("resnet50", "nvidia", "A100x1x8", 8) == pytest.approx(0.1)  # 32 x 8 = 256
    assert lr("resnet50", "nvidia", "A100x1x8", 8, "bs=64") == pytest.approx(0.2)
    assert lr("resnet50", "nvidia", "A100x1x1", 1) == pytest.approx(0.8)  # fixed by the hardware file
    assert lr("mobilenetv2", "iluvatar", "BI-V100x1x8", 8) == pytest.approx(0.045)
    assert lr("bigtransfer", "nvidia", "A100x1x8", 8) == pytest.approx(0.003 * 128 / 512)
    assert lr("vit", "nvidia", "A100x1x8", 8) == pytest.approx(0.1)


def test_vit_patches_must_tile_the_image() -> None:
    spec = load_case("vit")
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        load_config("vit", spec.config, "cpu", "cpux1x1", "image_size=36")


def test_cases_are_found_by_name() -> None:
    assert available_cases() == ["allreduce", "bigtransfer", "mobilenetv2", "resnet50", "vit"]
    with pytest.raises(CaseError, match="unknown case 'events'"):
        load_case("events")


def test_lr_schedules() -> None:
    spec = load_case("resnet50")
    cfg = load_config("resnet50", spec.config, "cpu", "none", "warmup_epochs=1,lr_step_epochs=2").values
    step = LrSchedule.from_config(cfg, peak=1.0, steps_per_epoch=10, global_batch=8)
    assert step.at(0) == pytest.approx(0.1) and step.at(9) == pytest.approx(1.0)  # warm-up
    assert step.at(19) == pytest.approx(1.0) and step.at(20) == pytest.approx(0.1)

    cfg = load_config("resnet50", spec.config, "cpu", "none",
                      "warmup_epochs=0,lr_schedule=multistep,lr_milestones=[0.5,2]").values
    multi = LrSchedule.from_config(cfg, peak=1.0, steps_per_epoch=10, global_batch=8)
    assert [multi.at(s) for s in (4, 5, 19, 20)] == pytest.approx([1.0, 0.1, 0.1, 0.01])

    cfg = load_config("resnet50", spec.config, "cpu", "none",
                      "warmup_epochs=0,lr_schedule=cosine,epochs=4,max_steps=20").values
    cosine = LrSchedule.from_config(cfg, peak=1.0, steps_per_epoch=10, global_batch=8)
    assert cosine.at(0) == pytest.approx(1.0) and cosine.at(10) == pytest.approx(0.5)
    assert cosine.at(20) == pytest.approx(0.0, abs=1e-12)


def test_the_step_budget_is_the_least_of_epochs_max_steps_and_max_samples(case_dir: Path) -> None:
    from cases.driver import step_budget

    assert step_budget(load(case_dir, fix_hp="epochs=3").values, steps_per_epoch=10, global_batch=8) == 30
    assert step_budget(load(case_dir, fix_hp="epochs=3,max_steps=12").values, 10, 8) == 12
    assert step_budget(load(case_dir, fix_hp="epochs=3,max_samples=100").values, 10, 8) == 13  # 100 / 8, rounded up
