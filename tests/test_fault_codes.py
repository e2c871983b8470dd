"""The README's fault-code table is the code's table (harness/faults/codes.py):
every code, its text and whether it is severe, in the same order; and every
code the harness raises or attributes is in it."""

from __future__ import annotations

import re

from harness import REPO_ROOT
from harness.faults.codes import CODES

ROW = re.compile(r"^\| `(BENCH-[A-Z]\d\d)` \| (.+?) \| (yes|) ?\|$")
SECTION = "## Fault codes and quarantine"


def readme_rows() -> list[tuple[str, str, bool]]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `BENCH-"):
            found = ROW.match(line)
            assert found, f"a table row the test cannot read: {line!r}"
            rows.append((found.group(1), found.group(2).strip(), found.group(3) == "yes"))
    return rows


def test_the_readme_table_lists_every_code_with_its_text_and_severity() -> None:
    assert readme_rows() == [(entry.code, entry.text, entry.severe) for entry in CODES.values()]


def test_every_code_the_harness_names_is_in_the_table() -> None:
    named = set()
    for path in (REPO_ROOT / "harness").rglob("*.py"):
        named |= set(re.findall(r"\"(BENCH-[A-Z]\d\d)\"", path.read_text(encoding="utf-8")))
    assert named and named <= set(CODES), sorted(named - set(CODES))


def test_the_row_pattern_sees_a_wrong_row() -> None:
    assert ROW.match("| `BENCH-G03` | uncorrected ECC rise | yes |")
    assert ROW.match("| `BENCH-H01` | unreachable |  |")
    assert not ROW.match("| BENCH-H01 | unreachable |  |")
