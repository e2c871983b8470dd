"""The vendor page as a model: the 通用指标 table, the 性能指标 rows and the
whole page, everything the parser does not interpret kept as raw markdown.

A page has, in order: free markdown (dataset links), the vendor heading
(``### Nvidia GPU配置与运行信息参考``), ``#### 环境配置`` with a hardware and a
software list (harness/pages/env_section.py), ``### 运行情况`` with the 通用指标
table and the 性能指标 table, then free markdown again (notes, licence). The
pages are copied in ``tests/fixtures/vendor_pages/``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field

from harness.pages.cells import (
    EMPTY_CELL,
    AccCell,
    LabelStyle,
    MemCell,
    NumberCell,
    config_label,
    e2e_cell,
    fix_hp_params,
    throughput_cell,
)
from harness.pages.env_section import HardwareEnv, SoftwareEnv
from harness.pages.labels import GENERAL_HEADER, HEADINGS, Lang, strip_number_prefix

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


# --------------------------------------------------------------------------- metric rows


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
        bare = strip_number_prefix(self.title)
        for suffix in HEADINGS["title_suffix"]:
            if bare.endswith(suffix):
                bare = bare[: -len(suffix)]
        return bare.strip() or None

