"""A Job's names and ids are checked before anything happens: the run id, the
--param template overrides, the vendor name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT
from harness.core.job import RUN_ID_RE, ensure_new_run_id, make_job, new_run_id, validate_run_id
from harness.core.vendor import load_vendor
from harness.errors import UserError


@pytest.mark.parametrize("run_id", ["20261125-000000-abcdef", "a", "9", "night.1_retry-2", "A" * 100, "v1.2"])
def test_good_run_ids(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id
    assert make_job("resnet50", "cpu", "cpu", "1x1", run_id=run_id).run_id == run_id


@pytest.mark.parametrize(
    "run_id",
    ["", "../x", "a/b", "a..b", "..", ".hidden", "-rf", "_x", "A" * 101, "a b", "a\nb", "a\tb", "run;rm",
     "é", "a$b", "a:b", "a=b"],
)
def test_bad_run_ids_are_user_errors_naming_run_id(run_id: str) -> None:
    with pytest.raises(UserError) as info:
        make_job("resnet50", "cpu", "cpu", "1x1", run_id=run_id)
    assert info.value.field == "RUN_ID" and info.value.exit_code == 2
    assert str(info.value).startswith(f"RUN_ID: {run_id!r} is not a usable run id")


def test_new_run_ids_are_valid_and_distinct() -> None:
    ids = {new_run_id() for _ in range(20)}
    assert len(ids) == 20 and all(RUN_ID_RE.match(i) for i in ids)
    assert RUN_ID_RE.match(make_job("resnet50", "cpu", "cpu", "1x1").run_id)


def test_ensure_new_run_id(tmp_path: Path) -> None:
    ensure_new_run_id(tmp_path, "fresh")  # nothing there
    ensure_new_run_id(tmp_path / "no-results-yet", "fresh")
    (tmp_path / "taken" / "resnet50").mkdir(parents=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for run_id in ("taken", "dangling"):
        with pytest.raises(UserError) as info:
            ensure_new_run_id(tmp_path, run_id)
        assert info.value.field == "RUN_ID"
        assert f"run id {run_id} is taken: {tmp_path / run_id} exists" in str(info.value)
    with pytest.raises(UserError, match="not a usable run id"):
        ensure_new_run_id(tmp_path, "../taken")


def test_cli_refuses_a_bad_run_id_with_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "harness", "bench", "--dry-run", "--run-id", "../../etc"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "RUN_ID: '../../etc' is not a usable run id" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"apt_packages": "curl"}, "--param apt_packages: expected a list"),
        ({"pip_packages": [1.5]}, "--param pip_packages: item 0 of the list is the number 1.5, expected a string"),
        ({"base_image": ["a", "b"]}, "--param base_image: expected a single string"),
        ({"base_image": True}, "--param base_image: expected a string"),
        ({"base_image": "x\0y"}, "--param base_image: the value holds a NUL byte"),
        ({"unknown": "a\nb"}, "--param unknown: the value holds a newline"),
    ],
)
def test_bad_params_are_refused_when_the_job_is_made(params: dict, message: str) -> None:
    with pytest.raises(UserError) as info:
        make_job("resnet50", "cpu", "cpu", "1x1", template_overrides=params)
    assert str(info.value).startswith(message), str(info.value)


def test_good_params_are_kept() -> None:
    params = {"apt_packages": ["curl"], "base_image": "debian:12", "unknown": 3}
    assert make_job("resnet50", "cpu", "cpu", "1x1", template_overrides=params).template_overrides == params


@pytest.mark.parametrize("name", ["../Dockerfiles/cpu", "cpu/", "partials", "", "CPU"])
def test_vendor_names_are_names_not_paths(name: str) -> None:
    with pytest.raises(UserError, match="unknown vendor"):
        load_vendor(name)
