"""Render a vendor's Dockerfile template and assemble its build context.

The image tag is a hash of the rendered Dockerfile and every file of the build
context, so an edit to the template, a parameter or the training code gives a
new tag (a rebuild), and an unchanged one is a cache hit on every host.

Every parameter is checked before the template is rendered: the kind of the
vendor's default, no control character (harness/core/vendor.py), and a refusal
names where the value came from (the vendor spec, hosts.yaml's
cluster.template_params, --param).
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from harness import REPO_ROOT
from harness.core.inventory import Inventory
from harness.core.job import Job
from harness.core.plan import ImagePlan
from harness.core.vendor import DOCKERFILES_DIR, VendorSpec, check_spec_params, template_value_problem
from harness.errors import UserError

PARTIALS_DIR = DOCKERFILES_DIR / "partials"
# What the image carries besides its Dockerfile: the training code.
PAYLOAD_DIRS = ("cases",)
_IGNORED_PARTS = {"__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class ParamOrigin:
    """Where a template parameter's value was set, as a UserError names it."""

    file: str | None
    field: str


# When plan_image is not told where an override came from.
def _unknown_origin(key: str) -> ParamOrigin:
    return ParamOrigin(None, f"template parameter {key} (hosts.yaml cluster.template_params or --param)")


def check_template_params(vendor: VendorSpec, overrides: Mapping[str, Any],
                          origins: Mapping[str, ParamOrigin] | None = None) -> None:
    """UserError for the first bad parameter: the vendor spec's own, then each
    override against the vendor's default of the same name (any kind when the
    vendor has none), named by its origin."""
    check_spec_params(vendor, str(vendor.folder / "vendor.yaml"))
    defaults = {"python": vendor.python, **vendor.template_params}
    for key, value in overrides.items():
        problem = (template_value_problem(key, value, defaults[key]) if key in defaults
                   else template_value_problem(key, value))
        if problem:
            origin = (origins or {}).get(key) or _unknown_origin(key)
            raise UserError(problem, file=origin.file, field=origin.field)


def job_template_params(job: Job, inventory: Inventory) -> tuple[dict[str, Any], dict[str, ParamOrigin]]:
    """The overrides of a job's image (hosts.yaml's cluster.template_params, then
    the job's --param values, which win) and where each came from."""
    params: dict[str, Any] = {}
    origins: dict[str, ParamOrigin] = {}
    for key, value in inventory.cluster.template_params.items():
        params[key] = value
        origins[key] = ParamOrigin(inventory.source or None, f"cluster.template_params.{key}")
    for key, value in job.template_overrides.items():
        params[key] = value
        origins[key] = ParamOrigin(None, f"--param {key}")
    return params, origins


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
        # The interpreter is a vendor fact the launch needs too: one field, seen by the template as `python`.
        return env.get_template(vendor.template).render(vendor=vendor, **{"python": vendor.python, **params})
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


def plan_image(vendor: VendorSpec, overrides: dict[str, Any],
               origins: Mapping[str, ParamOrigin] | None = None) -> ImagePlan:
    """The image of `vendor` with `overrides` of its template parameters; `origins`
    (job_template_params) says where each override came from for the refusals."""
    check_template_params(vendor, overrides, origins)
    params = {**vendor.template_params, **overrides}
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


def plan_job_image(job: Job, inventory: Inventory, vendor: VendorSpec) -> ImagePlan:
    """plan_image with the job's and the inventory's overrides, each refusal naming its origin."""
    params, origins = job_template_params(job, inventory)
    return plan_image(vendor, params, origins)


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
