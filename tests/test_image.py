from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT
from harness.backends import image as image_module
from harness.backends.image import (
    check_template_params,
    content_hash,
    plan_image,
    plan_job_image,
    render_dockerfile,
    write_context,
)
from harness.core.inventory import Inventory, load_inventory
from harness.core.job import Job
from harness.core.vendor import available_vendors, load_vendor
from harness.errors import UserError


def test_cpu_template_renders_with_partials() -> None:
    text = render_dockerfile(load_vendor("cpu"), {**load_vendor("cpu").template_params,
                                                   "apt_packages": ["procps"], "pip_packages": ["rich==15.0.0", "pydantic>=2.5,<2.11"]})
    assert text.startswith("#") and "FROM bench-base/debian:bookworm" in text
    assert 'LABEL bench.vendor="cpu"' in text
    assert "apt-get install -y --no-install-recommends procps" in text
    assert "python3 -m pip install --no-cache-dir rich==15.0.0 'pydantic>=2.5,<2.11'" in text
    assert "COPY cases /workspace/cases" in text


def test_missing_template_parameter_is_a_user_error() -> None:
    vendor = load_vendor("cpu")
    params = dict(vendor.template_params)
    del params["base_image"]
    with pytest.raises(UserError, match="base_image"):
        render_dockerfile(vendor, params)


def test_tag_changes_with_template_params_and_is_stable_otherwise() -> None:
    vendor = load_vendor("cpu")
    first = plan_image(vendor, {})
    assert first.tag == plan_image(vendor, {}).tag
    assert first.tag.startswith("bench/cpu:")
    assert plan_image(vendor, {"base_image": "debian:12"}).tag != first.tag


def test_hash_covers_the_build_context(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    before = content_hash("FROM x\n", {"cases/a.py": a})
    a.write_text("x = 2\n")
    assert content_hash("FROM x\n", {"cases/a.py": a}) != before
    assert content_hash("FROM y\n", {"cases/a.py": a}) != content_hash("FROM x\n", {"cases/a.py": a})


def test_context_holds_dockerfile_and_payload_without_bytecode(tmp_path: Path) -> None:
    plan = plan_image(load_vendor("cpu"), {})
    folder = write_context(plan, tmp_path / "ctx")
    assert (folder / "Dockerfile").read_text() == plan.dockerfile
    assert (folder / "cases" / "protocol.py").is_file()
    assert not list(folder.rglob("__pycache__"))
    assert set(image_module.PAYLOAD_DIRS) <= {p.name for p in folder.iterdir()}


def test_every_shipped_vendor_renders() -> None:
    for name in available_vendors():
        vendor = load_vendor(name)
        assert "FROM " in render_dockerfile(vendor, vendor.template_params)


def test_unknown_vendor_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown vendor 'nvdia'.*cpu"):
        load_vendor("nvdia")


HOSTS = """
cluster:
  template_params: {template_params}
hosts:
  - {{name: a, address: h, devices: 2}}
"""


def job_and_inventory(tmp_path: Path, hosts_params: str = "{}", params: dict | None = None,
                      vendor: str = "cpu") -> tuple[Job, Inventory]:
    path = tmp_path / "hosts.yaml"
    path.write_text(HOSTS.format(template_params=hosts_params), encoding="utf-8")
    job = Job(case="resnet50", vendor=vendor, accelerator=vendor, nnodes=1, nproc_per_node=1,
              run_id="r1", template_overrides=dict(params or {}))  # unchecked: plan_job_image must check
    return job, load_inventory(path)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"apt_packages": "curl"}, "--param apt_packages",
         "expected a list (the vendor's default is []), got the string 'curl'; write a list"),
        ({"apt_packages": ["curl", None]}, "--param apt_packages", "item 1 of the list is the null None"),
        ({"base_image": ["debian:12"]}, "--param base_image", "expected a single string"),
        ({"base_image": 12.1}, "--param base_image", "got the number 12.1, which is how YAML reads it; quote it"),
        ({"base_image": None}, "--param base_image", "expected a string"),
        ({"base_image": "debian:12\nRUN rm -rf /"}, "--param base_image", "holds a newline"),
        ({"pip_packages": ["ok", "bad\tvalue"]}, "--param pip_packages", "the value[1] holds a tab"),
        ({"extra": "a\rb"}, "--param extra", "holds a carriage return"),
        ({"extra": {"k\0": "v"}}, "--param extra", "a key of the value holds a NUL byte"),
    ],
)
def test_bad_param_is_refused_before_rendering_naming_its_origin(tmp_path: Path, params: dict, field: str,
                                                                  message: str) -> None:
    job, inventory = job_and_inventory(tmp_path, params=params)
    with pytest.raises(UserError) as info:
        plan_job_image(job, inventory, load_vendor("cpu"))
    assert str(info.value).startswith(f"{field}: "), str(info.value)
    assert message in str(info.value)


def test_bad_hosts_yaml_param_names_the_inventory_field(tmp_path: Path) -> None:
    job, inventory = job_and_inventory(tmp_path, hosts_params="{apt_packages: curl}")
    with pytest.raises(UserError) as info:
        plan_job_image(job, inventory, load_vendor("cpu"))
    assert str(info.value).startswith(f"{tmp_path / 'hosts.yaml'}: cluster.template_params.apt_packages: expected a list")
    # --param wins over hosts.yaml, and a good value passes.
    job, inventory = job_and_inventory(tmp_path, hosts_params="{apt_packages: curl}", params={"apt_packages": ["curl"]})
    assert "--no-install-recommends curl" in plan_job_image(job, inventory, load_vendor("cpu")).dockerfile


def test_params_of_the_right_kind_render(tmp_path: Path) -> None:
    job, inventory = job_and_inventory(tmp_path, hosts_params="{apt_packages: [procps]}",
                                       params={"pip_packages": ["rich==15.0.0"], "extra": "unused"})
    plan = plan_job_image(job, inventory, load_vendor("cpu"))
    assert "install -y --no-install-recommends procps" in plan.dockerfile
    assert plan.params["pip_packages"] == ["rich==15.0.0"]


def test_plan_image_without_origins_still_refuses(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"template parameter apt_packages \(hosts.yaml cluster.template_params or "
                                        r"--param\): expected a list"):
        plan_image(load_vendor("cpu"), {"apt_packages": "curl"})


def test_bad_vendor_spec_values_name_the_vendor_file(tmp_path: Path) -> None:
    vendor = load_vendor("nvidia")
    spec = vendor.model_copy(update={"template_params": {**vendor.template_params, "ngc_tag": "21.02-py3\nRUN x"}})
    with pytest.raises(UserError) as info:
        check_template_params(spec, {})
    assert str(info.value).startswith(f"{vendor.folder / 'vendor.yaml'}: template_params.ngc_tag: the value holds a newline")
    pinned = vendor.model_copy(update={"framework_pins": {"pytorch-x": {"apt_packages": "curl"}}})
    with pytest.raises(UserError, match=r"framework_pins\.pytorch-x\.apt_packages: expected a list"):
        check_template_params(pinned, {})


def test_cli_refuses_a_string_for_a_list_param_with_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "harness", "bench", "--dry-run", "--vendor", "cpu",
                             "--param", "apt_packages=curl"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--param apt_packages: expected a list (the vendor's default is []), got the string 'curl'" \
        in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
