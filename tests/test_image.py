from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import image as image_module
from harness.backends.image import content_hash, plan_image, render_dockerfile, write_context
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
