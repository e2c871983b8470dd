"""A vendor README page from the harness's own runs (``python -m harness readme``):
the environment section from the hosts the runs recorded, 通用指标 from the
case, 性能指标 with one row per run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from harness.core.events import Event, last, parse_lines, read_event_files
from harness.core.results import RunResult
from harness.core.vendor import vendors_pinning
from harness.errors import UserError
from harness.hostinfo.compare import differences
from harness.hostinfo.model import UNKNOWN, EnvironmentInfo
from harness.pages.cells import LabelStyle
from harness.pages.env_section import HardwareEnv, SoftwareEnv
from harness.pages.labels import HEADINGS
from harness.pages.model import GeneralMetricRow, GeneralMetrics, VendorPage
from harness.pages.rows import label_style_of, row_from_result


def _known(value: str | None) -> str | None:
    return value if value and value != UNKNOWN else None


# --------------------------------------------------------------------------- runs -> page

# The 模型 cell the reference pages write for each case.
CASE_MODEL_NAMES = {
    "resnet50": "resnet50",
    "mobilenetv2": "MobilenetV2",
    "vit": "Vision Transformer",
    "bigtransfer": "Big Transfer",
}
DEFAULT_DATASET = "ImageNet2012"
SYNTHETIC_SUFFIX = " (synthetic)"
DEPENDENCY_NAMES = ("cuda", "cudnn", "nccl")


def hardware_from_environment(env: EnvironmentInfo) -> HardwareEnv:
    """The 硬件环境 list of one captured host; unknown fields are left out."""
    return HardwareEnv.build(
        machine_model=_known(env.machine_model),
        accelerator_model=_known(env.accelerator_model),
        cpu_model=_known(env.cpu_model),
        network_type=_known(env.network_type),
        network_rate=_known(env.network_rate),
    )


def framework_string(torch_version: str | None) -> str | None:
    """``pytorch-1.8.0a0+52ea372``, as the pages write the framework."""
    return f"pytorch-{torch_version}" if torch_version else None


def software_from_environment(
    env: EnvironmentInfo, *, torch_version: str | None = None, image: str | None = None
) -> SoftwareEnv:
    """The 软件环境 list of one captured host. The framework is the host's probed
    torch, else ``torch_version`` (what the training processes reported);
    the dependencies are the probed cuda/cudnn/nccl, ``无`` when none is known."""
    versions = env.framework
    dependencies = {name: getattr(versions, name) for name in DEPENDENCY_NAMES if _known(getattr(versions, name))}
    return SoftwareEnv.build(
        os=_known(env.os),
        kernel=_known(env.kernel),
        driver=_known(env.accelerator_driver),
        docker_version=_known(env.docker_version),
        docker_image=image,
        framework=framework_string(_known(versions.torch) or torch_version),
        dependencies=dependencies,
    )


def run_environments(result: RunResult) -> dict[str, EnvironmentInfo]:
    """The per-host environments recorded in results.json (hosts whose record
    does not validate are skipped)."""
    found: dict[str, EnvironmentInfo] = {}
    for host, data in result.environment.items():
        try:
            found[host] = EnvironmentInfo.model_validate(data)
        except ValidationError:
            continue
    return found


def torch_from_events(result: RunResult) -> str | None:
    """torch.__version__ as the training processes reported it (the ``world``
    event): from the collected event logs, else the log tail kept in results.json."""
    for node in result.nodes:
        events: list[Event] = []
        folder = Path(node.log_dir)
        if folder.is_dir():
            for rank_events in read_event_files(folder).values():
                events += rank_events
        events += parse_lines(node.last_lines)
        world = last(events, "world")
        if world is not None and world.value.get("torch"):
            return str(world.value["torch"])
    return None


def image_tag(result: RunResult) -> str | None:
    """``bench/cpu:f50b2d847e8ee0cf`` from ``bench/cpu:f50b... (sha256:...)``."""
    tag = result.image.partition(" (")[0].strip()
    return tag or None


def page_from_results(
    results: list[RunResult],
    hardware: HardwareEnv,
    software: SoftwareEnv,
    model_name: str,
    dataset: str,
    *,
    task_category: str = "图像分类",
    device_short_name: str | None = None,
    title: str | None = None,
    acc_header: str = "acc",
    preamble: str = "",
    trailing: str = "",
    label_style: LabelStyle = "fullwidth",
    include_failed: bool = False,
) -> VendorPage:
    """A page for the harness's own runs, one 性能指标 row per run in the order
    given. Failed runs are left out unless ``include_failed``."""
    chosen = [result for result in results if include_failed or result.status == "success"]
    rows = [row_from_result(result, label_style) for result in chosen]
    short_name = device_short_name or (chosen[0].accelerator if chosen else hardware.accelerator_model or "")
    if title is None:
        vendor = chosen[0].vendor if chosen else (results[0].vendor if results else "")
        title = f"{vendor} {HEADINGS['title_suffix'][0]}".strip()
    return VendorPage(
        preamble=preamble,
        title=title,
        hardware=hardware,
        software=software,
        general_metrics=GeneralMetrics.standard(
            model_name=model_name,
            dataset=dataset,
            device_short_name=short_name,
            task_category=task_category,
            acc_header=acc_header,
        ),
        acc_header=acc_header,
        metric_rows=rows,
        trailing=trailing,
    )



@dataclass
class Readme:
    page: VendorPage
    excluded: list[RunResult] = field(default_factory=list)  # failed runs left out of the table
    notes: list[str] = field(default_factory=list)  # warnings for the user


def _general_from_reference(general: GeneralMetrics, dataset: str, device_short_name: str) -> GeneralMetrics:
    """The reference page's 通用指标 wording, with the two cells that describe
    the runs themselves (数据集, 硬件设备简称) set to ours."""
    rows: list[GeneralMetricRow] = []
    for row in general.rows:
        name = row.name.strip("* ")
        if name == "数据集":
            row = row.model_copy(update={"value": dataset})
        elif name == "硬件设备简称":
            row = row.model_copy(update={"value": device_short_name})
        rows.append(row)
    return GeneralMetrics(header=list(general.header), rows=rows)


@dataclass
class _Wording:
    """What a page says about the runs besides their numbers."""

    model_name: str
    dataset: str
    device_short_name: str
    title: str | None = None  # None: "<vendor> 配置与运行信息参考"
    acc_header: str = "acc"
    preamble: str = ""
    label_style: LabelStyle = "fullwidth"


def _wording(case: str, vendor: str, accelerator: str, reference: VendorPage | None) -> _Wording:
    wording = _Wording(CASE_MODEL_NAMES.get(case, case), DEFAULT_DATASET, accelerator)
    if reference is None:
        return wording
    general = reference.general_metrics
    if general is not None:
        wording.model_name = general.get("模型") or wording.model_name
        wording.dataset = general.get("数据集") or wording.dataset
        short_name = general.get("硬件设备简称")
        if short_name and accelerator.lower() in short_name.lower():
            wording.device_short_name = short_name
    wording.acc_header = reference.acc_header
    wording.preamble = reference.preamble
    wording.label_style = label_style_of(reference)
    framework = reference.software.framework
    if framework and vendor in vendors_pinning(framework):
        wording.title = reference.title  # the same vendor's page: its heading fits ours
    return wording


def _page_environment(candidates: Sequence[RunResult]) -> tuple[RunResult, EnvironmentInfo, list[str]]:
    """The run and host whose environment the page shows, and notes about that choice."""
    source = next((result for result in candidates if run_environments(result)), candidates[0])
    environments = run_environments(source)
    env = next(iter(environments.values()), EnvironmentInfo(host="unknown"))
    notes: list[str] = []
    if not environments:
        notes.append(f"run {source.run_id} recorded no environment: the environment section is left empty")
    for difference in differences(environments):
        values = ", ".join(f"{host}={value}" for host, value in difference.values.items())
        notes.append(f"hosts of run {source.run_id} differ in {difference.field} ({values}); "
                     f"the page shows {env.host}'s")
    return source, env, notes


def build_readme(
    results: Sequence[RunResult], reference: VendorPage | None = None, *, include_failed: bool = False
) -> Readme:
    """The vendor page of one case's runs on one vendor, one 性能指标 row per
    run in the order given. The environment is the first host's of the first
    included run that recorded one. With ``reference``, its title (same
    vendor), preamble, model name, dataset and 通用指标 wording are used.
    Failed runs are left out unless ``include_failed``."""
    if not results:
        raise UserError("no runs to write a page for", field="RESULTS")
    cases = sorted({result.case for result in results})
    vendors = sorted({result.vendor for result in results})
    if len(cases) > 1 or len(vendors) > 1:
        raise UserError(
            f"a page is one case on one vendor; these results hold cases {', '.join(cases)} "
            f"on vendors {', '.join(vendors)}: pass the results of one case and vendor",
            field="RESULTS",
        )
    chosen = [result for result in results if include_failed or result.status == "success"]
    excluded = [result for result in results if not include_failed and result.status != "success"]
    source, env, notes = _page_environment(chosen or list(results))
    if not chosen:
        notes.append("no successful run: the 性能指标 table is empty")
    wording = _wording(cases[0], vendors[0], source.accelerator, reference)
    if any(result.effective_config.get("synthetic") for result in chosen):
        wording.dataset += SYNTHETIC_SUFFIX
    page = page_from_results(
        list(results),
        hardware_from_environment(env),
        # Older results.json files hold no container framework: fall back to the event logs.
        software_from_environment(env, torch_version=None if _known(env.framework.torch) else torch_from_events(source),
                                  image=image_tag(source)),
        wording.model_name,
        wording.dataset,
        device_short_name=wording.device_short_name,
        title=wording.title,
        acc_header=wording.acc_header,
        preamble=wording.preamble,
        label_style=wording.label_style,
        include_failed=include_failed,
    )
    if reference is not None and reference.general_metrics is not None:
        page.general_metrics = _general_from_reference(
            reference.general_metrics, wording.dataset, wording.device_short_name)
    return Readme(page=page, excluded=excluded, notes=notes)

