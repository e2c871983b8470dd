"""The words of a vendor page: headings, the environment list labels and the
通用指标 wording, each in Chinese as the pages write it and in English.

The pages themselves are copied in ``tests/fixtures/vendor_pages/``.
"""

from __future__ import annotations

import re
from typing import Literal

Lang = Literal["zh", "en"]

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

# "2. " in "2. Nvidia GPU配置与运行信息参考"
NUMBER_PREFIX = re.compile(r"^\d+(\.\d+)*\.?\s+")


def normalise_label(label: str) -> str:
    return re.sub(r"\s+", "", label).lower()


def _label_lookup(labels: dict[str, tuple[str, str]]) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for key, (zh, en) in labels.items():
        lookup[normalise_label(zh)] = key
        lookup[normalise_label(en)] = key
    return lookup


# normalised label, Chinese or English -> canonical key
HARDWARE_KEYS = _label_lookup(HARDWARE_LABELS)
SOFTWARE_KEYS = _label_lookup(SOFTWARE_LABELS)


def strip_number_prefix(text: str) -> str:
    return NUMBER_PREFIX.sub("", text)


def heading_is(text: str, which: str) -> bool:
    """Whether a heading's text is ``HEADINGS[which]``, in either language, numbered or not."""
    zh, en = HEADINGS[which]
    bare = strip_number_prefix(text).strip()
    return bare == zh or bare.lower() == en.lower()


def translate_general(text: str) -> str:
    """One 通用指标 cell in English; text without a translation stays as written."""
    bold = text.startswith("**") and text.endswith("**") and len(text) > 4
    inner = text[2:-2] if bold else text
    match = SEE_PERFORMANCE.match(inner)
    if match:
        translated = f'{match.group(2)}, see "Performance metrics"'
    else:
        translated = GENERAL_TRANSLATIONS.get(inner, inner)
    return f"**{translated}**" if bold else translated
