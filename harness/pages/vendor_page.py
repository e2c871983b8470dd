"""The vendor README page: parse it into a model, render it back.

The five pages in ``reference/vendor-readmes/`` are the format. A page has, in
order: free markdown (dataset links), the vendor heading (``### Nvidia
GPU配置与运行信息参考``), ``#### 环境配置`` with a hardware and a software list,
``### 运行情况`` with the 通用指标 table and the 性能指标 table, then free
markdown again (notes, licence). Everything the parser does not interpret is
kept as raw markdown, so nothing on a page is lost.

Every metric cell keeps the text it was written with (``21.6 / 32.0``,
``0.84192``, an empty cell) next to the number parsed from it; rendering a
parsed row writes that text back, so a parsed table re-renders cell for cell.
Cells built from numbers (``page_from_results``) are formatted by the rules in
``format_*`` below, with ``/`` where there is no value.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from harness.core.results import RunResult
from harness.errors import UserError

EMPTY_CELL = "/"
ABSENT_TEXTS = frozenset({"", "/", "-", "n/a", "N/A"})

Lang = Literal["zh", "en"]
LabelStyle = Literal["fullwidth", "ascii", "en"]
AccForm = Literal["percent_sign", "fraction", "percent_number"]

# --------------------------------------------------------------------------- labels

# canonical key -> (Chinese label as the pages write it, English label)
HARDWARE_LABELS: dict[str, tuple[str, str]] = {
    "machine_and_accelerator": ("机器、加速卡型号", "Machine and accelerator model"),
    "machine_model": ("机器型号", "Machine model"),
    "accelerator_model": ("加速卡型号", "Accelerator model"),
    "cpu_model": ("CPU型号", "CPU model"),
    "network": ("多机网络类型、带宽", "Multi-node network type and bandwidth"),
}
SOFTWARE_LABELS: dict[str, tuple[str, str]] = {
    "os": ("OS版本", "OS version"),
    "kernel": ("OS kernel版本", "OS kernel version"),
    "driver": ("加速卡驱动版本", "Accelerator driver version"),
    "docker_version": ("Docker 版本", "Docker version"),
    "docker_image": ("Docker镜像和版本", "Docker image and version"),
    "framework": ("训练框架版本", "Training framework version"),
    "dependencies": ("依赖软件版本", "Dependency versions"),
}

HEADINGS: dict[str, tuple[str, str]] = {
    "title_suffix": ("配置与运行信息参考", " configuration and run reference"),
    "environment": ("环境配置", "Environment"),
    "hardware": ("硬件环境", "Hardware environment"),
    "software": ("软件环境", "Software environment"),
    "run": ("运行情况", "Run results"),
    "general": ("通用指标", "General metrics"),
    "performance": ("性能指标", "Performance metrics"),
    "config_column": ("配置", "Config"),
}
GENERAL_HEADER: dict[str, list[str]] = {
    "zh": ["指标名称", "指标值", "特殊说明"],
    "en": ["Metric", "Value", "Notes"],
}
METRIC_COLUMNS = ["precision", "fix_hp", "e2e_time", "p_whole", "p_train", "p_core"]

# Chinese text of the standard 通用指标 rows -> English, for lang="en".
GENERAL_TRANSLATIONS: dict[str, str] = {
    "任务类别": "Task category",
    "模型": "Model",
    "数据集": "Dataset",
    "数据精度": "Data precision",
    "超参修改": "Hyper-parameter changes",
    "硬件设备简称": "Device short name",
    "硬件存储使用": "Device memory used",
    "端到端时间": "End-to-end time",
    "总吞吐量": "Overall throughput",
    "训练吞吐量": "Training throughput",
    "计算吞吐量": "Compute throughput",
    "训练结果": "Training result",
    "额外修改项": "Other changes",
    "图像分类": "Image classification",
    "无": "none",
    "可选fp32/amp/fp16": "fp32/amp/fp16 available",
    "可选fp32/amp/fp16/tf32": "fp32/amp/fp16/tf32 available",
    "可选fp32/tf32/amp/bf16": "fp32/tf32/amp/bf16 available",
    "跑满硬件设备评测吞吐量所需特殊超参": "special hyper-parameters needed to saturate the device",
    "通常称为“显存”,单位为GiB": "device memory, in GiB",
    "总时间+Perf初始化等时间": "total time including Perf initialisation",
    "实际训练图片数除以总时间(performance_whole)": "trained images divided by total time (performance_whole)",
    "实际训练样本数除以总时间(performance_whole)": "trained samples divided by total time (performance_whole)",
    "不包含每个epoch末尾的评估部分耗时": "excludes the evaluation at the end of each epoch",
    "不包含数据IO部分的耗时(p3>p2>p1)": "excludes data IO time (p3>p2>p1)",
    "单位为top1分类准确率(acc1)": "top-1 classification accuracy (acc1)",
    "验证loss": "validation loss",
}
SEE_PERFORMANCE = re.compile(r"^(\**)([\w.]+),见“性能指标”(\**)$")


def _normalise_label(label: str) -> str:
    return re.sub(r"\s+", "", label).lower()


def _label_lookup(labels: dict[str, tuple[str, str]]) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for key, (zh, en) in labels.items():
        lookup[_normalise_label(zh)] = key
        lookup[_normalise_label(en)] = key
    return lookup


HARDWARE_KEYS = _label_lookup(HARDWARE_LABELS)
SOFTWARE_KEYS = _label_lookup(SOFTWARE_LABELS)


def _heading_is(text: str, which: str) -> bool:
    zh, en = HEADINGS[which]
    bare = _strip_number_prefix(text).strip()
    return bare == zh or bare.lower() == en.lower()


def _strip_number_prefix(text: str) -> str:
    return re.sub(r"^\d+(\.\d+)*\.?\s+", "", text)


# --------------------------------------------------------------------------- environment


class EnvEntry(BaseModel):
    """One list line of the environment section, ``- 标签：值``, with its nested lines."""

    key: str | None = None  # the canonical field this line fills; None: not interpreted
    label: str  # as written, e.g. "CPU 型号"
    value: str = ""
    separator: str = "："  # ":" or "：" as written; "" for a line without one
    children: list[EnvEntry] = Field(default_factory=list)


class EnvSection(BaseModel):
    heading: str
    entries: list[EnvEntry] = Field(default_factory=list)

    def entry(self, key: str) -> EnvEntry | None:
        return next((entry for entry in self.entries if entry.key == key), None)

    def value(self, key: str) -> str | None:
        entry = self.entry(key)
        return entry.value if entry is not None and entry.value else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def extra_fields(self) -> dict[str, str]:
        """Fields the harness does not interpret, original label -> value, in page order."""
        return {entry.label: entry.value for entry in self.entries if entry.key is None}


class HardwareEnv(EnvSection):
    heading: str = HEADINGS["hardware"][0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def machine_model(self) -> str | None:
        return self.value("machine_model") or self.value("machine_and_accelerator")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accelerator_model(self) -> str | None:
        return self.value("accelerator_model") or self.value("machine_and_accelerator")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cpu_model(self) -> str | None:
        return self.value("cpu_model")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def network_type(self) -> str | None:
        return _split_network(self.value("network"))[0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def network_rate(self) -> str | None:
        return _split_network(self.value("network"))[1]

    @classmethod
    def build(
        cls,
        *,
        machine_model: str | None = None,
        accelerator_model: str | None = None,
        cpu_model: str | None = None,
        network_type: str | None = None,
        network_rate: str | None = None,
        extra: dict[str, str] | None = None,
        separator: str = ": ",
    ) -> HardwareEnv:
        """A hardware list in the pages' wording; machine and accelerator share one
        line (``机器、加速卡型号``) when they are the same string."""
        sep = separator.strip()
        entries: list[EnvEntry] = []

        def add(key: str, value: str | None) -> None:
            if value:
                entries.append(EnvEntry(key=key, label=HARDWARE_LABELS[key][0], value=value, separator=sep))

        if machine_model and machine_model == accelerator_model:
            add("machine_and_accelerator", machine_model)
        else:
            add("machine_model", machine_model)
            add("accelerator_model", accelerator_model)
        add("cpu_model", cpu_model)
        network = "，".join(part for part in (network_type, network_rate) if part)
        add("network", network)
        for label, value in (extra or {}).items():
            entries.append(EnvEntry(label=label, value=value, separator=sep))
        return cls(entries=entries)


class SoftwareEnv(EnvSection):
    heading: str = HEADINGS["software"][0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def os(self) -> str | None:
        return self.value("os")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kernel(self) -> str | None:
        return self.value("kernel")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def driver(self) -> str | None:
        return self.value("driver")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def docker_version(self) -> str | None:
        return self.value("docker_version")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def docker_image(self) -> str | None:
        return self.value("docker_image")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def framework(self) -> str | None:
        return self.value("framework")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dependencies(self) -> dict[str, str]:
        """``{"cuda": "11.4"}``; empty for ``无``."""
        entry = self.entry("dependencies")
        if entry is None:
            return {}
        return parse_dependencies(entry)

    @classmethod
    def build(
        cls,
        *,
        os: str | None = None,
        kernel: str | None = None,
        driver: str | None = None,
        docker_version: str | None = None,
        docker_image: str | None = None,
        framework: str | None = None,
        dependencies: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> SoftwareEnv:
        """A software list in the pages' wording (full-width colons, dependencies
        as a nested list, ``无`` when there are none)."""
        entries: list[EnvEntry] = []

        def add(key: str, value: str | None) -> None:
            if value:
                entries.append(EnvEntry(key=key, label=SOFTWARE_LABELS[key][0], value=value, separator="："))

        add("os", os)
        if kernel:
            entries.append(EnvEntry(key="kernel", label=SOFTWARE_LABELS["kernel"][0], value=kernel, separator=":"))
        add("driver", driver)
        add("docker_version", docker_version)
        add("docker_image", docker_image)
        add("framework", framework)
        if dependencies is not None:
            children = [EnvEntry(label=name, value=version, separator=":") for name, version in dependencies.items()]
            entries.append(
                EnvEntry(
                    key="dependencies",
                    label=SOFTWARE_LABELS["dependencies"][0],
                    value="" if children else "无",
                    separator="：",
                    children=children,
                )
            )
        for label, value in (extra or {}).items():
            entries.append(EnvEntry(label=label, value=value, separator="："))
        return cls(entries=entries)


def _split_network(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    parts = [part.strip() for part in re.split(r"[，,]", value, maxsplit=1)]
    if len(parts) == 2:
        return parts[0] or None, parts[1] or None
    return parts[0], None


_DEPENDENCY_ITEM = re.compile(
    r"^(?P<name>[A-Za-z_][\w.+-]*?)\s*(?:(?P<op>==|>=|<=|~=|=|:)\s*|-(?=\d)|\s+(?=\d))(?P<version>\S.*)$"
)


def parse_dependencies(entry: EnvEntry) -> dict[str, str]:
    """The ``依赖软件版本`` line as name -> version: nested ``- cuda: 11.4`` lines,
    or a list written inline (``pytorch-1.12.1+cpu``, ``a==1,b>=2``), or ``无``."""
    found: dict[str, str] = {}
    value = entry.value.strip()
    if value and value.lower() not in ("无", "none"):
        for item in re.split(r"[，,;；]", value):
            item = item.strip()
            if not item:
                continue
            match = _DEPENDENCY_ITEM.match(item)
            if match is None:
                found[item] = ""
                continue
            operator = match.group("op")
            version = match.group("version").strip()
            keeps_operator = operator in (">=", "<=", "~=")
            found[match.group("name")] = f"{operator}{version}" if keeps_operator else version
    _collect_children(entry.children, "", found)
    return found


def _collect_children(children: list[EnvEntry], prefix: str, found: dict[str, str]) -> None:
    for child in children:
        name = f"{prefix}{child.label}"
        if child.value or not child.children:
            found[name] = child.value
        _collect_children(child.children, f"{name}.", found)


# --------------------------------------------------------------------------- general metrics


class GeneralMetricRow(BaseModel):
    name: str  # as written, bold markers included ("**计算吞吐量**")
    value: str
    note: str = ""


class GeneralMetrics(BaseModel):
    """The 通用指标 table, kept row by row."""

    header: list[str] = Field(default_factory=lambda: list(GENERAL_HEADER["zh"]))
    rows: list[GeneralMetricRow] = Field(default_factory=list)

    def get(self, name: str) -> str | None:
        for row in self.rows:
            if row.name.strip("* ") == name:
                return row.value
        return None

    @classmethod
    def standard(
        cls,
        *,
        model_name: str,
        dataset: str,
        device_short_name: str,
        task_category: str = "图像分类",
        acc_header: str = "acc",
        precisions_note: str = "可选fp32/tf32/amp/bf16",
        other_changes: str = "无",
    ) -> GeneralMetrics:
        """The table every reference page carries, filled in for one case."""
        rows = [
            ("任务类别", task_category, ""),
            ("模型", model_name, ""),
            ("数据集", dataset, ""),
            ("数据精度", "precision,见“性能指标”", precisions_note),
            ("超参修改", "fix_hp,见“性能指标”", "跑满硬件设备评测吞吐量所需特殊超参"),
            ("硬件设备简称", device_short_name, ""),
            ("硬件存储使用", "mem,见“性能指标”", "通常称为“显存”,单位为GiB"),
            ("端到端时间", "e2e_time,见“性能指标”", "总时间+Perf初始化等时间"),
            ("总吞吐量", "p_whole,见“性能指标”", "实际训练样本数除以总时间(performance_whole)"),
            ("训练吞吐量", "p_train,见“性能指标”", "不包含每个epoch末尾的评估部分耗时"),
            ("**计算吞吐量**", "**p_core,见“性能指标”**", "不包含数据IO部分的耗时(p3>p2>p1)"),
            ("训练结果", f"{acc_header},见“性能指标”", "单位为top1分类准确率(acc1)"),
            ("额外修改项", other_changes, ""),
        ]
        return cls(rows=[GeneralMetricRow(name=n, value=v, note=note) for n, v, note in rows])


def _translate_general(text: str) -> str:
    bold = text.startswith("**") and text.endswith("**") and len(text) > 4
    inner = text[2:-2] if bold else text
    match = SEE_PERFORMANCE.match(inner)
    if match:
        translated = f'{match.group(2)}, see "Performance metrics"'
    else:
        translated = GENERAL_TRANSLATIONS.get(inner, inner)
    return f"**{translated}**" if bold else translated


# --------------------------------------------------------------------------- metric cells


def _rounded(value: float, decimals: int) -> str:
    """Half-up, as a person writing the table would (76.125 -> 76.13), not
    Python's half-to-even on the binary float."""
    step = Decimal(1).scaleb(-decimals)
    return str(Decimal(repr(value)).quantize(step, rounding=ROUND_HALF_UP))


def format_throughput(value: float | None) -> str:
    """Samples/s: an integer from 100 up, one decimal below (``23.1``)."""
    if value is None:
        return EMPTY_CELL
    return _rounded(value, 0) if value >= 100 else _rounded(value, 1)


def format_e2e_time(seconds: float | None) -> str:
    return EMPTY_CELL if seconds is None else _rounded(seconds, 0)


def format_acc(percent: float | None, decimals: int = 2) -> str:
    return EMPTY_CELL if percent is None else f"{_rounded(percent, decimals)}%"


def format_mem(used_gib: float | None, total_gib: float | None) -> str:
    if used_gib is None or total_gib is None:
        return EMPTY_CELL
    return f"{_rounded(used_gib, 1)}/{_rounded(total_gib, 1)}"


class NumberCell(BaseModel):
    text: str  # as written; "" for an empty cell
    value: float | None = None


def throughput_cell(value: float | None) -> NumberCell:
    return NumberCell(text=format_throughput(value), value=value)


def e2e_cell(seconds: float | None) -> NumberCell:
    return NumberCell(text=format_e2e_time(seconds), value=seconds)


class AccCell(BaseModel):
    text: str  # as written: "75.0%", "0.84192", "80.024", "/" or ""
    percent: float | None = None  # always in percent
    form: AccForm | None = None  # how the page wrote it

    @computed_field  # type: ignore[prop-decorator]
    @property
    def note(self) -> str | None:
        if self.form == "fraction":
            return f"written as a fraction ({self.text}); recorded as {self.percent:g}%"
        if self.form == "percent_number":
            return f"written as a percentage without the sign ({self.text})"
        return None

    @classmethod
    def from_percent(cls, percent: float | None, decimals: int = 2) -> AccCell:
        if percent is None:
            return cls(text=EMPTY_CELL)
        return cls(text=format_acc(percent, decimals), percent=percent, form="percent_sign")


class MemCell(BaseModel):
    text: str  # as written: "5.8/40.0", "21.6 / 32.0"
    used_gib: float | None = None
    total_gib: float | None = None

    @classmethod
    def from_gib(cls, used_gib: float | None, total_gib: float | None) -> MemCell:
        if used_gib is None or total_gib is None:
            return cls(text=EMPTY_CELL)
        return cls(text=format_mem(used_gib, total_gib), used_gib=used_gib, total_gib=total_gib)


def config_label(accelerator: str, nnodes: int, nproc: int, style: LabelStyle = "fullwidth") -> str:
    """``A100单机8卡（1x8）`` (fullwidth), ``A100单机8卡(1x8)`` (ascii) or
    ``A100 1 node 8 cards (1x8)`` (en)."""
    if style == "en":
        nodes = "node" if nnodes == 1 else "nodes"
        cards = "card" if nproc == 1 else "cards"
        return f"{accelerator} {nnodes} {nodes} {nproc} {cards} ({nnodes}x{nproc})"
    machines = "单机" if nnodes == 1 else "两机" if nnodes == 2 else f"{nnodes}机"
    cards = "单卡" if nproc == 1 else f"{nproc}卡"
    if style == "ascii":
        return f"{accelerator}{machines}{cards}({nnodes}x{nproc})"
    return f"{accelerator}{machines}{cards}（{nnodes}x{nproc}）"


def fix_hp_params(fix_hp: str) -> dict[str, str]:
    """``bs=256,lr=0.72`` -> {"bs": "256", "lr": "0.72"}; ``/`` or empty -> {}."""
    if fix_hp.strip() in ABSENT_TEXTS:
        return {}
    pairs = (item.split("=", 1) for item in fix_hp.split(",") if "=" in item)
    return {name.strip(): value.strip() for name, value in pairs}


class MetricRow(BaseModel):
    """One row of the 性能指标 table."""

    config: str  # the label as written, e.g. "A100单机8卡（1x8）"
    accelerator: str
    nnodes: int  # from the (NxP) in the label, which is the truth
    nproc: int
    precision: str
    fix_hp: str  # "bs=256,lr=0.72" or "/"
    e2e_time: NumberCell
    p_whole: NumberCell
    p_train: NumberCell
    p_core: NumberCell
    acc: AccCell
    mem: MemCell

    @property
    def config_name(self) -> str:
        return f"{self.nnodes}x{self.nproc}"

    @property
    def fix_hp_params(self) -> dict[str, str]:
        return fix_hp_params(self.fix_hp)

    def cells(self, lang: Lang = "zh") -> list[str]:
        label = self.config if lang == "zh" else config_label(self.accelerator, self.nnodes, self.nproc, "en")
        return [
            label,
            self.precision,
            self.fix_hp,
            self.e2e_time.text,
            self.p_whole.text,
            self.p_train.text,
            self.p_core.text,
            self.acc.text,
            self.mem.text,
        ]

    @classmethod
    def from_values(
        cls,
        *,
        accelerator: str,
        nnodes: int,
        nproc: int,
        precision: str,
        fix_hp: str | None = None,
        e2e_time: float | None = None,
        p_whole: float | None = None,
        p_train: float | None = None,
        p_core: float | None = None,
        acc_percent: float | None = None,
        mem_used_gib: float | None = None,
        mem_total_gib: float | None = None,
        label_style: LabelStyle = "fullwidth",
        acc_decimals: int = 2,
    ) -> MetricRow:
        return cls(
            config=config_label(accelerator, nnodes, nproc, label_style),
            accelerator=accelerator,
            nnodes=nnodes,
            nproc=nproc,
            precision=precision,
            fix_hp=fix_hp if fix_hp and fix_hp.strip() else EMPTY_CELL,
            e2e_time=e2e_cell(e2e_time),
            p_whole=throughput_cell(p_whole),
            p_train=throughput_cell(p_train),
            p_core=throughput_cell(p_core),
            acc=AccCell.from_percent(acc_percent, acc_decimals),
            mem=MemCell.from_gib(mem_used_gib, mem_total_gib),
        )


# --------------------------------------------------------------------------- the page


class VendorPage(BaseModel):
    preamble: str = ""  # markdown before the vendor heading
    title: str | None = None  # the vendor heading as written, without "### "
    environment_heading: str = HEADINGS["environment"][0]
    hardware: HardwareEnv = Field(default_factory=HardwareEnv)
    software: SoftwareEnv = Field(default_factory=SoftwareEnv)
    extra_environment: list[str] = Field(default_factory=list)  # unrecognised "- ##### ..." blocks, raw
    run_heading: str = HEADINGS["run"][0]
    extra_run: list[str] = Field(default_factory=list)  # unrecognised blocks before the tables, raw
    general_heading: str = HEADINGS["general"][0]
    general_metrics: GeneralMetrics | None = None
    performance_heading: str = HEADINGS["performance"][0]
    acc_header: str = "acc"  # "acc" or "final_acc1", as written
    metric_rows: list[MetricRow] = Field(default_factory=list)
    trailing: str = ""  # markdown after the performance table

    @computed_field  # type: ignore[prop-decorator]
    @property
    def vendor(self) -> str | None:
        """``Nvidia GPU`` from ``2. Nvidia GPU配置与运行信息参考``."""
        if not self.title:
            return None
        bare = _strip_number_prefix(self.title)
        for suffix in HEADINGS["title_suffix"]:
            if bare.endswith(suffix):
                bare = bare[: -len(suffix)]
        return bare.strip() or None


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Line:
    number: int  # 1-based, for error messages
    text: str


_ENV_SUBSECTION = re.compile(r"^\s*[-*+]\s+#{3,6}\s+(?P<heading>.+?)\s*$")
_LIST_ITEM = re.compile(r"^(?P<indent>[ \t]*)[-*+]\s+(?P<text>.*?)\s*$")
_BULLET = re.compile(r"^\s*[*-]\s+(?P<text>[^|#].*?)\s*$")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*$")
_CONFIG_NXP = re.compile(r"[（(]\s*(?P<nnodes>\d+)\s*[xX×*]\s*(?P<nproc>\d+)\s*[）)]\s*$")
_CONFIG_ZH_MACHINES = r"(?:单机|两机|[二三四五六七八九十]+机)"
_CONFIG_EN_DESCRIPTOR = re.compile(r"\s+\d+\s+nodes?\s+\d+\s+cards?$", re.IGNORECASE)
_MEM = re.compile(r"^(?P<used>\d+(?:\.\d+)?)\s*/\s*(?P<total>\d+(?:\.\d+)?)$")
_SEPARATOR_CELL = re.compile(r"^:?-{2,}:?$")


def parse_page(text: str, source: str) -> VendorPage:
    """Parse one vendor README page. Malformed input raises UserError naming
    ``source`` and the line."""
    return _PageParser(text, source).parse()


def parse_config_label(label: str) -> tuple[str, int, int] | None:
    """(accelerator, nnodes, nproc) from ``BI-V100单机8卡（1x1）``; the (NxP) wins
    over the words before it."""
    match = _CONFIG_NXP.search(label)
    if match is None:
        return None
    nnodes, nproc = int(match.group("nnodes")), int(match.group("nproc"))
    prefix = label[: match.start()].rstrip()
    # the words before (NxP) are not trusted for the counts, only stripped; a
    # machine count written in digits must be the real one, or "A1002机" would
    # lose the accelerator's digits
    zh_words = re.compile(rf"(?:{_CONFIG_ZH_MACHINES}|{nnodes}机)(?:单卡|\d+卡)$")
    prefix = zh_words.sub("", prefix)
    prefix = _CONFIG_EN_DESCRIPTOR.sub("", prefix)
    return prefix.strip(), nnodes, nproc


def split_table_row(line: str) -> list[str]:
    row = line.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    return [cell.strip() for cell in row.split("|")]


def _strip_blank_edges(lines: list[str]) -> str:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return "\n".join(lines[start:end])


class _PageParser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = [_Line(number, line) for number, line in enumerate(text.splitlines(), start=1)]

    def error(self, line: _Line | int, message: str) -> UserError:
        number = line.number if isinstance(line, _Line) else line
        return UserError(message, file=self.source, field=f"line {number}")

    # -- layout

    def find_heading(self, which: str, level: int, start: int = 0) -> int | None:
        for index in range(start, len(self.lines)):
            match = _HEADING.match(self.lines[index].text)
            if match and len(match.group("hashes")) == level and _heading_is(match.group("text"), which):
                return index
        return None

    def parse(self) -> VendorPage:
        page = VendorPage()
        env_index = self.find_heading("environment", 4)
        title_index = self.find_title(env_index)
        run_index = self.find_heading("run", 3, (env_index or title_index or 0))

        body_start = 0
        if title_index is not None:
            page.title = self.heading_text(title_index)
            page.preamble = _strip_blank_edges([line.text for line in self.lines[:title_index]])
            body_start = title_index + 1
        if env_index is not None:
            page.environment_heading = self.heading_text(env_index)
            env_end = run_index if run_index is not None else self.end_of_environment(env_index + 1)
            self.parse_environment(self.lines[env_index + 1 : env_end], page)
            body_start = env_end
        elif title_index is not None:
            # a vendor heading without 环境配置: keep whatever stands between it and the results
            env_end = run_index if run_index is not None else self.end_of_environment(title_index + 1)
            raw = _strip_blank_edges([line.text for line in self.lines[title_index + 1 : env_end]])
            if raw:
                page.extra_environment.append(raw)
            body_start = env_end
        elif run_index is not None:
            page.preamble = _strip_blank_edges([line.text for line in self.lines[:run_index]])
        if run_index is not None:
            page.run_heading = self.heading_text(run_index)
            body_start = run_index + 1
        self.parse_run(self.lines[body_start:], page)
        return page

    def heading_text(self, index: int) -> str:
        match = _HEADING.match(self.lines[index].text)
        assert match is not None
        return match.group("text")

    def end_of_environment(self, start: int) -> int:
        """Without a 运行情况 heading the environment ends at the next heading,
        results bullet or table."""
        for index in range(start, len(self.lines)):
            text = self.lines[index].text
            heading = _HEADING.match(text)
            bullet = _BULLET.match(text)
            if heading and len(heading.group("hashes")) <= 3:
                return index
            if bullet and any(_heading_is(bullet.group("text"), which) for which in ("general", "performance")):
                return index
            if text.strip().startswith("|"):
                return index
        return len(self.lines)

    def find_title(self, env_index: int | None) -> int | None:
        if env_index is not None:
            for index in range(env_index - 1, -1, -1):
                match = _HEADING.match(self.lines[index].text)
                if match and len(match.group("hashes")) <= 3:
                    return index
            return None
        for index, line in enumerate(self.lines):
            match = _HEADING.match(line.text)
            if match and HEADINGS["title_suffix"][0] in match.group("text"):
                return index
        return None

    # -- environment

    def parse_environment(self, lines: list[_Line], page: VendorPage) -> None:
        blocks: list[tuple[_Line | None, list[_Line]]] = [(None, [])]
        for line in lines:
            if _ENV_SUBSECTION.match(line.text):
                blocks.append((line, []))
            else:
                blocks[-1][1].append(line)
        for heading_line, body in blocks:
            if heading_line is None:
                raw = _strip_blank_edges([line.text for line in body])
                if raw:
                    page.extra_environment.append(raw)
                continue
            heading = _ENV_SUBSECTION.match(heading_line.text).group("heading")  # type: ignore[union-attr]
            if heading.endswith(HEADINGS["hardware"][0]) or heading.lower() == HEADINGS["hardware"][1].lower():
                page.hardware = HardwareEnv(heading=heading, entries=self.parse_entries(body, HARDWARE_KEYS))
            elif heading.endswith(HEADINGS["software"][0]) or heading.lower() == HEADINGS["software"][1].lower():
                page.software = SoftwareEnv(heading=heading, entries=self.parse_entries(body, SOFTWARE_KEYS))
            else:
                page.extra_environment.append(_strip_blank_edges([heading_line.text] + [line.text for line in body]))

    def parse_entries(self, lines: list[_Line], keys: dict[str, str]) -> list[EnvEntry]:
        top: list[EnvEntry] = []
        stack: list[tuple[int, EnvEntry]] = []
        last: EnvEntry | None = None
        for line in lines:
            if not line.text.strip():
                continue
            match = _LIST_ITEM.match(line.text)
            if match is None:
                if last is None:
                    raise self.error(line, f"expected a list item (`- 标签：值`), found {line.text.strip()!r}")
                last.value = f"{last.value} {line.text.strip()}".strip()
                continue
            indent = len(match.group("indent").replace("\t", "    "))
            entry = _split_entry(match.group("text"))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            if stack:
                stack[-1][1].children.append(entry)
            else:
                entry.key = keys.get(_normalise_label(entry.label))
                top.append(entry)
            stack.append((indent, entry))
            last = entry
        return top

    # -- run results

    def parse_run(self, lines: list[_Line], page: VendorPage) -> None:
        pending: str | None = None
        raw: list[str] = []
        index = 0
        performance_found = False

        def flush() -> None:
            block = _strip_blank_edges(raw)
            if block:
                page.extra_run.append(block)
            raw.clear()

        while index < len(lines):
            line = lines[index]
            stripped = line.text.strip()
            bullet = _BULLET.match(line.text)
            if bullet and (_heading_is(bullet.group("text"), "general") or _heading_is(bullet.group("text"), "performance")):
                flush()
                pending = "general" if _heading_is(bullet.group("text"), "general") else "performance"
                if pending == "general":
                    page.general_heading = bullet.group("text")
                else:
                    page.performance_heading = bullet.group("text")
                index += 1
                continue
            if stripped.startswith("|"):
                table: list[_Line] = []
                while index < len(lines) and lines[index].text.strip().startswith("|"):
                    table.append(lines[index])
                    index += 1
                kind = pending or self.guess_table_kind(table[0])
                if kind == "general":
                    flush()
                    page.general_metrics = self.parse_general_table(table)
                elif kind == "performance":
                    flush()
                    page.acc_header, page.metric_rows = self.parse_performance_table(table)
                    performance_found = True
                    page.trailing = _strip_blank_edges([rest.text for rest in lines[index:]])
                    break
                else:
                    raw.extend(row.text for row in table)
                pending = None
                continue
            raw.append(line.text)
            index += 1
        if not performance_found:
            last = self.lines[-1].number if self.lines else 1
            raise self.error(last, f"no {HEADINGS['performance'][0]} table (| 配置 | precision | ... | mem |) found")

    def guess_table_kind(self, header: _Line) -> str | None:
        cells = [cell.lower() for cell in split_table_row(header.text)]
        if "precision" in cells and "p_core" in cells:
            return "performance"
        if len(cells) == 3 and cells[0] in (GENERAL_HEADER["zh"][0], GENERAL_HEADER["en"][0].lower()):
            return "general"
        return None

    def table_rows(self, table: list[_Line]) -> tuple[_Line, list[str], list[tuple[_Line, list[str]]]]:
        header_line = table[0]
        header = split_table_row(header_line.text)
        rows: list[tuple[_Line, list[str]]] = []
        for position, line in enumerate(table[1:]):
            cells = split_table_row(line.text)
            if position == 0 and all(_SEPARATOR_CELL.match(cell.replace(" ", "")) for cell in cells if cell):
                continue
            rows.append((line, cells))
        return header_line, header, rows

    def parse_general_table(self, table: list[_Line]) -> GeneralMetrics:
        header_line, header, rows = self.table_rows(table)
        if len(header) != 3:
            raise self.error(header_line, f"the {HEADINGS['general'][0]} table needs 3 columns, found {len(header)}")
        general = GeneralMetrics(header=header)
        for line, cells in rows:
            if len(cells) != 3:
                raise self.error(line, f"expected 3 cells in this {HEADINGS['general'][0]} row, found {len(cells)}")
            general.rows.append(GeneralMetricRow(name=cells[0], value=cells[1], note=cells[2]))
        return general

    def parse_performance_table(self, table: list[_Line]) -> tuple[str, list[MetricRow]]:
        header_line, header, rows = self.table_rows(table)
        expected = len(METRIC_COLUMNS) + 3
        lowered = [cell.lower() for cell in header]
        config_names = (HEADINGS["config_column"][0], HEADINGS["config_column"][1].lower(), "configuration")
        if (
            len(header) != expected
            or lowered[0] not in config_names
            or lowered[1:7] != METRIC_COLUMNS
            or lowered[8] != "mem"
        ):
            raise self.error(
                header_line,
                "the 性能指标 header must be | 配置 | precision | fix_hp | e2e_time | p_whole | p_train | p_core "
                f"| acc | mem |, found {header_line.text.strip()!r}",
            )
        parsed: list[MetricRow] = []
        for line, cells in rows:
            if len(cells) != expected:
                raise self.error(line, f"expected {expected} cells in this 性能指标 row, found {len(cells)}")
            parsed.append(self.parse_metric_row(line, cells))
        return header[7], parsed

    def parse_metric_row(self, line: _Line, cells: list[str]) -> MetricRow:
        label = parse_config_label(cells[0])
        if label is None:
            raise self.error(line, f"config {cells[0]!r} has no (NxP) such as （1x8）")
        accelerator, nnodes, nproc = label
        return MetricRow(
            config=cells[0],
            accelerator=accelerator,
            nnodes=nnodes,
            nproc=nproc,
            precision=cells[1],
            fix_hp=cells[2],
            e2e_time=self.number_cell(line, cells[3], "e2e_time"),
            p_whole=self.number_cell(line, cells[4], "p_whole"),
            p_train=self.number_cell(line, cells[5], "p_train"),
            p_core=self.number_cell(line, cells[6], "p_core"),
            acc=self.acc_cell(line, cells[7]),
            mem=self.mem_cell(line, cells[8]),
        )

    def number_cell(self, line: _Line, text: str, column: str) -> NumberCell:
        if text in ABSENT_TEXTS:
            return NumberCell(text=text)
        try:
            return NumberCell(text=text, value=float(text.replace(",", "")))
        except ValueError:
            raise self.error(line, f"{column} cell {text!r} is not a number") from None

    def acc_cell(self, line: _Line, text: str) -> AccCell:
        if text in ABSENT_TEXTS:
            return AccCell(text=text)
        try:
            if text.endswith("%"):
                return AccCell(text=text, percent=float(text[:-1]), form="percent_sign")
            number = float(text)
        except ValueError:
            raise self.error(line, f"acc cell {text!r} is not a number") from None
        if number <= 1.0:
            return AccCell(text=text, percent=round(number * 100, 6), form="fraction")
        return AccCell(text=text, percent=number, form="percent_number")

    def mem_cell(self, line: _Line, text: str) -> MemCell:
        if text in ABSENT_TEXTS:
            return MemCell(text=text)
        match = _MEM.match(text)
        if match is None:
            raise self.error(line, f"mem cell {text!r} is not used/total in GiB (e.g. 27.6/40.0)")
        return MemCell(text=text, used_gib=float(match.group("used")), total_gib=float(match.group("total")))


def _split_entry(text: str) -> EnvEntry:
    positions = [position for position in (text.find(":"), text.find("：")) if position >= 0]
    if not positions:
        return EnvEntry(label=text.strip(), separator="")
    position = min(positions)
    return EnvEntry(label=text[:position].strip(), value=text[position + 1 :].strip(), separator=text[position])


# --------------------------------------------------------------------------- rendering


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _display_width(text))


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table, columns padded to line up (CJK characters count double)."""
    widths = [max(3, _display_width(cell)) for cell in header]
    for row in rows:
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], _display_width(cell))
    lines = ["| " + " | ".join(_pad(cell, widths[i]) for i, cell in enumerate(header)) + " |"]
    lines.append("| " + " | ".join("-" * width for width in widths) + " |")
    for row in rows:
        lines.append("| " + " | ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)) + " |")
    return "\n".join(lines)


def metric_header(acc_header: str = "acc", lang: Lang = "zh") -> list[str]:
    """``配置 | precision | fix_hp | e2e_time | p_whole | p_train | p_core | acc | mem``."""
    return [HEADINGS["config_column"][0 if lang == "zh" else 1], *METRIC_COLUMNS, acc_header, "mem"]


def render_metric_table(rows: list[MetricRow], acc_header: str = "acc", lang: Lang = "zh") -> str:
    """The 性能指标 table: ``| 配置 | precision | fix_hp | ... | acc | mem |``."""
    return render_table(metric_header(acc_header, lang), [row.cells(lang) for row in rows])


def render_general_table(general: GeneralMetrics, lang: Lang = "zh") -> str:
    if lang == "zh":
        return render_table(general.header, [[row.name, row.value, row.note] for row in general.rows])
    rows = [[_translate_general(row.name), _translate_general(row.value), _translate_general(row.note)] for row in general.rows]
    return render_table(GENERAL_HEADER["en"], rows)


def _render_entries(entries: list[EnvEntry], indent: int, labels: dict[str, tuple[str, str]], lang: Lang) -> list[str]:
    lines: list[str] = []
    for entry in entries:
        label = entry.label
        value = entry.value
        separator = entry.separator
        if lang == "en" and entry.key in labels:
            label = labels[entry.key][1]
            separator = ":" if separator else ""
            if entry.key == "dependencies" and value == "无":
                value = "none"
        if separator == ":":
            text = f"{label}: {value}" if value else f"{label}:"
        else:
            text = f"{label}{separator}{value}"
        lines.append(" " * indent + "- " + text)
        lines.extend(_render_entries(entry.children, indent + 2, {}, lang))
    return lines


def render_page(page: VendorPage, lang: Lang = "zh") -> str:
    """The whole page as markdown, in the reference pages' layout."""
    zh = lang == "zh"
    out: list[str] = []
    if page.preamble:
        out += [page.preamble, ""]
    if page.title is not None:
        title = page.title
        if not zh and page.vendor:
            number = re.match(r"^\d+(\.\d+)*\.?\s+", page.title)
            title = f"{number.group(0) if number else ''}{page.vendor}{HEADINGS['title_suffix'][1]}"
        out.append(f"### {title}")
    out.append(f"#### {page.environment_heading if zh else HEADINGS['environment'][1]}")
    for section, labels, which, indent in (
        (page.hardware, HARDWARE_LABELS, "hardware", 4),
        (page.software, SOFTWARE_LABELS, "software", 3),
    ):
        out.append(f"- ##### {section.heading if zh else HEADINGS[which][1]}")
        out += _render_entries(section.entries, indent, labels, lang)
    for raw in page.extra_environment:
        out += [raw]
    out += ["", f"### {page.run_heading if zh else HEADINGS['run'][1]}", ""]
    for raw in page.extra_run:
        out += [raw, ""]
    if page.general_metrics is not None:
        out += [f"* {page.general_heading if zh else HEADINGS['general'][1]}", ""]
        out += [render_general_table(page.general_metrics, lang), ""]
    out += [f"* {page.performance_heading if zh else HEADINGS['performance'][1]}", ""]
    out.append(render_metric_table(page.metric_rows, page.acc_header, lang))
    if page.trailing:
        out += ["", page.trailing]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- from runs, to specs


def row_from_result(result: RunResult, label_style: LabelStyle = "fullwidth") -> MetricRow:
    """The 性能指标 row of one run; ``/`` wherever the run has no value."""
    metrics = result.metrics
    return MetricRow.from_values(
        accelerator=result.accelerator,
        nnodes=result.nnodes,
        nproc=result.nproc_per_node,
        precision=result.precision,
        fix_hp=result.fix_hp,
        e2e_time=metrics.e2e_time if metrics else None,
        p_whole=metrics.p_whole if metrics else None,
        p_train=metrics.p_train if metrics else None,
        p_core=metrics.p_core if metrics else None,
        acc_percent=metrics.acc if metrics else None,
        mem_used_gib=metrics.mem_used_gib if metrics else None,
        mem_total_gib=metrics.mem_total_gib if metrics else None,
        label_style=label_style,
    )


def row_cells(row: MetricRow, lang: Lang = "zh") -> list[str]:
    """The nine cells of a row, as the table prints them."""
    return row.cells(lang)


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


_MEMORY_IN_NAME = re.compile(r"(?<![\d.])(?P<size>\d+(?:\.\d+)?)\s*G(?:i?B)?(?![A-Za-z])", re.IGNORECASE)


def device_memory_from_name(name: str | None) -> float | None:
    """40.0 from ``NVIDIA_A100-SXM4-40GB``, 32.0 from ``Iluvatar BI-V100 32GB``."""
    if not name:
        return None
    match = _MEMORY_IN_NAME.search(name)
    return float(match.group("size")) if match else None


def env_spec_from_page(page: VendorPage) -> dict[str, str | float | dict[str, str] | None]:
    """The page's environment flattened into the fields ``environment.drift`` compares."""
    hardware, software = page.hardware, page.software
    memory = device_memory_from_name(hardware.accelerator_model)
    if memory is None:
        totals = [row.mem.total_gib for row in page.metric_rows if row.mem.total_gib is not None]
        memory = max(totals) if totals else None
    return {
        "machine_model": hardware.machine_model,
        "accelerator_model": hardware.accelerator_model,
        "device_memory_gib": memory,
        "cpu_model": hardware.cpu_model,
        "network_type": hardware.network_type,
        "network_rate": hardware.network_rate,
        "os": software.os,
        "kernel": software.kernel,
        "driver": software.driver,
        "docker_version": software.docker_version,
        "docker_image": software.docker_image,
        "framework": software.framework,
        "dependencies": software.dependencies,
    }


def label_style_of(page: VendorPage) -> LabelStyle:
    """The bracket style the page's row labels use: ``（1x8）`` or ``(1x8)``."""
    first = page.metric_rows[0].config if page.metric_rows else ""
    return "ascii" if "(" in first and "（" not in first else "fullwidth"


def read_page(path: Path) -> VendorPage:
    """A vendor page from disk; unreadable or malformed -> UserError naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the vendor page: {exc.strerror or exc}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"the vendor page is not UTF-8 text: {exc.reason}", file=str(path)) from exc
    return parse_page(text, str(path))
