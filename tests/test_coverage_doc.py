"""docs/coverage.md stays true: every stockade rule it names exists, and every row it calls covered names a test
file that exists and mentions each of the row's rules."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

from stockade.admission.review import IMAGE_RULES
from stockade.rulepacks import builtin

RID = re.compile(r"STK-[A-Z0-9]+(?:-[A-Z0-9]+)*-\d{3}")
TEST_FILE = re.compile(r"`(tests/test_\w+\.py)`")


def _rows() -> list[list[str]]:
    rows = []
    for line in (ROOT / "docs" / "coverage.md").read_text().splitlines():
        table_row = line.startswith("| ") and not line.startswith(("| #", "| Set"))
        if table_row and (RID.search(line) or " | covered | " in line):
            rows.append(line)
    return [[c.strip() for c in r.strip("|").split(" | ")] for r in rows]


def test_every_rule_named_exists() -> None:
    known = {r["id"] for r in builtin()} | {r.id for r in IMAGE_RULES.values()}
    named = {rid for row in _rows() for cell in row for rid in RID.findall(cell)}
    assert len(named) > 60
    assert named - known == set()


def test_covered_rows_are_proven_by_tests_that_name_their_rules() -> None:
    covered = [row for row in _rows() if "covered" in row]
    assert len(covered) >= 40
    for row in covered:
        rules = {rid for cell in row[:-1] for rid in RID.findall(cell)}
        files = TEST_FILE.findall(row[-1])
        if not rules:  # covered by a component, not a rule (the server's running-image view)
            continue
        assert files, row
        texts = " ".join(Path(ROOT / f).read_text() for f in files)
        assert all(r in texts for r in rules), (row[1], rules)
