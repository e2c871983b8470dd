"""The cells of the 性能指标 table: how numbers are written into them, the cell
models that keep the text next to the number, the config label (``A100单机8卡（1x8）``)
both ways, and the fix_hp cell's pairs.

Every metric cell keeps the text it was written with (``21.6 / 32.0``,
``0.84192``, an empty cell) next to the number parsed from it, so a parsed row
re-renders cell for cell. Cells built from numbers are formatted by the
``format_*`` rules below, with ``/`` where there is no value.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, computed_field

from cases.protocol import GrammarError, split_fix_hp

EMPTY_CELL = "/"
ABSENT_TEXTS = frozenset({"", "/", "-", "n/a", "N/A"})

LabelStyle = Literal["fullwidth", "ascii", "en"]
AccForm = Literal["percent_sign", "fraction", "percent_number"]


# --------------------------------------------------------------------------- numbers -> text


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


# --------------------------------------------------------------------------- cell models


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


# --------------------------------------------------------------------------- the config label


_CONFIG_NXP = re.compile(r"[（(]\s*(?P<nnodes>\d+)\s*[xX×*]\s*(?P<nproc>\d+)\s*[）)]\s*$")
_CONFIG_ZH_MACHINES = r"(?:单机|两机|[二三四五六七八九十]+机)"
_CONFIG_EN_DESCRIPTOR = re.compile(r"\s+\d+\s+nodes?\s+\d+\s+cards?$", re.IGNORECASE)


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


# --------------------------------------------------------------------------- the fix_hp cell


def fix_hp_params(fix_hp: str) -> dict[str, str]:
    """``bs=256,lr=0.72`` -> {"bs": "256", "lr": "0.72"}; ``/`` or empty -> {}.

    The fix_hp grammar of cases/protocol.py (``split_fix_hp``); a page cell
    that does not follow it is read leniently: the ``key=value`` items between
    commas, the rest ignored."""
    if fix_hp.strip() in ABSENT_TEXTS:
        return {}
    try:
        return dict(split_fix_hp(fix_hp))
    except GrammarError:
        pairs = (item.split("=", 1) for item in fix_hp.split(",") if "=" in item)
        return {name.strip(): value.strip() for name, value in pairs}
