"""Writing a vendor page: VendorPage (harness/pages/model.py) -> markdown, in
the layout of the pages copied in ``tests/fixtures/vendor_pages/``, in Chinese
as they are or in English."""

from __future__ import annotations

import unicodedata

from harness.pages.env_section import EnvEntry
from harness.pages.labels import (
    GENERAL_HEADER,
    HARDWARE_LABELS,
    HEADINGS,
    METRIC_COLUMNS,
    NUMBER_PREFIX,
    SOFTWARE_LABELS,
    Lang,
    translate_general,
)
from harness.pages.model import GeneralMetrics, MetricRow, VendorPage


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
    rows = [[translate_general(row.name), translate_general(row.value), translate_general(row.note)] for row in general.rows]
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
            number = NUMBER_PREFIX.match(page.title)
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
