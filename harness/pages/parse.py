"""Reading a vendor page: markdown -> VendorPage (harness/pages/model.py).

Everything the parser does not interpret is kept as raw markdown, so nothing
on a page is lost; malformed input raises UserError naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.pages.cells import ABSENT_TEXTS, AccCell, MemCell, NumberCell, parse_config_label
from harness.pages.env_section import EnvEntry, HardwareEnv, SoftwareEnv
from harness.pages.labels import (
    GENERAL_HEADER,
    HARDWARE_KEYS,
    HEADINGS,
    METRIC_COLUMNS,
    SOFTWARE_KEYS,
    heading_is,
    normalise_label,
)
from harness.pages.model import GeneralMetricRow, GeneralMetrics, MetricRow, VendorPage


@dataclass(frozen=True)
class _Line:
    number: int  # 1-based, for error messages
    text: str


_ENV_SUBSECTION = re.compile(r"^\s*[-*+]\s+#{3,6}\s+(?P<heading>.+?)\s*$")
_LIST_ITEM = re.compile(r"^(?P<indent>[ \t]*)[-*+]\s+(?P<text>.*?)\s*$")
_BULLET = re.compile(r"^\s*[*-]\s+(?P<text>[^|#].*?)\s*$")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*$")
_MEM = re.compile(r"^(?P<used>\d+(?:\.\d+)?)\s*/\s*(?P<total>\d+(?:\.\d+)?)$")
_SEPARATOR_CELL = re.compile(r"^:?-{2,}:?$")


def parse_page(text: str, source: str) -> VendorPage:
    """Parse one vendor README page. Malformed input raises UserError naming
    ``source`` and the line."""
    return _PageParser(text, source).parse()


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
            if match and len(match.group("hashes")) == level and heading_is(match.group("text"), which):
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
            if bullet and any(heading_is(bullet.group("text"), which) for which in ("general", "performance")):
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
            match = _ENV_SUBSECTION.match(heading_line.text)
            assert match is not None, "a block starts only at a line the pattern matched"
            heading = match.group("heading")
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
                entry.key = keys.get(normalise_label(entry.label))
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
            if bullet and (heading_is(bullet.group("text"), "general") or heading_is(bullet.group("text"), "performance")):
                flush()
                pending = "general" if heading_is(bullet.group("text"), "general") else "performance"
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


def read_page(path: Path) -> VendorPage:
    """A vendor page from disk; unreadable or malformed -> UserError naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the vendor page: {exc.strerror or exc}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"the vendor page is not UTF-8 text: {exc.reason}", file=str(path)) from exc
    return parse_page(text, str(path))
