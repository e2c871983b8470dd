"""Render a vendor's Dockerfile template and assemble its build context.

The image tag is a hash of the rendered Dockerfile and every file of the build
context, so an edit to the template, a parameter or the training code gives a
new tag (a rebuild), and an unchanged one is a cache hit on every host.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from harness import REPO_ROOT
from harness.core.vendor import DOCKERFILES_DIR, VendorSpec
from harness.errors import UserError

PARTIALS_DIR = DOCKERFILES_DIR / "partials"
# What the image carries besides its Dockerfile: the training code.
PAYLOAD_DIRS = ("cases",)
_IGNORED_PARTS = {"__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class ImagePlan:
    vendor: str
    tag: str
    dockerfile: str
    params: dict[str, Any]
    # Build-context files: path inside the context -> source on the controller.
    context_files: dict[str, Path] = field(default_factory=dict)
    content_hash: str = ""


def render_dockerfile(vendor: VendorSpec, params: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(vendor.folder), str(PARTIALS_DIR)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    # Values that land in a RUN line are shell words: quote them (version specifiers hold < and >).
    env.filters["shquote"] = shlex.quote
    try:
        return env.get_template(vendor.template).render(vendor=vendor, **params)
    except jinja2.UndefinedError as exc:
        raise UserError(
            f"template needs a parameter that is not set ({exc.message}); set it in "
            "template_params of the vendor spec or of hosts.yaml's cluster section",
            file=str(vendor.template_path),
        ) from exc
    except jinja2.TemplateError as exc:
        raise UserError(f"template error: {exc}", file=str(vendor.template_path)) from exc


def _payload_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for top in PAYLOAD_DIRS:
        for path in sorted((REPO_ROOT / top).rglob("*")):
            rel = path.relative_to(REPO_ROOT)
            if path.is_file() and not _IGNORED_PARTS.intersection(rel.parts) and path.suffix != ".pyc":
                files[rel.as_posix()] = path
    return files


def content_hash(dockerfile: str, files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    digest.update(b"Dockerfile\0" + dockerfile.encode("utf-8") + b"\0")
    for name in sorted(files):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(files[name].read_bytes()).digest())
    return digest.hexdigest()


def plan_image(vendor: VendorSpec, overrides: dict[str, Any]) -> ImagePlan:
    # The interpreter is a vendor fact the launch needs too: one field, seen by the template as `python`.
    params = {"python": vendor.python, **vendor.template_params, **overrides}
    dockerfile = render_dockerfile(vendor, params)
    files = _payload_files()
    digest = content_hash(dockerfile, files)
    return ImagePlan(
        vendor=vendor.name,
        tag=f"bench/{vendor.name}:{digest[:16]}",
        dockerfile=dockerfile,
        params=params,
        context_files=files,
        content_hash=digest,
    )


def write_context(plan: ImagePlan, folder: Path) -> Path:
    """Lay the build context out in `folder` (created fresh) and return it."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text(plan.dockerfile, encoding="utf-8")
    for name, source in plan.context_files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return folder
