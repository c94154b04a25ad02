"""docs/errors.md's table of bad inputs, as the tests read it: the wording of each line lives in the code
that raises it and in that table; the test that produces a line checks that the two agree."""

from __future__ import annotations

import re
from functools import cache

from tests.conftest import REPO_ROOT

ERRORS_MD = REPO_ROOT / "docs" / "errors.md"
# a run directory's name: its start time, then the overrides (outputs/runs/<run>)
RUN = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(-\d+)?(_[^\s:/]*)?")


def _code(cell: str) -> str:
    """The text of a Markdown code span (`x` or `` x `` when it holds backticks)."""
    cell = cell.strip()
    ticks = len(cell) - len(cell.lstrip("`"))
    return cell[ticks:-ticks].strip().replace("\\|", "|")


@cache
def documented() -> dict[str, str]:
    """The input (the first code span of the row's first cell) -> the line the docs show for it."""
    rows = {}
    for row in ERRORS_MD.read_text().splitlines():
        if not row.startswith("| `"):
            continue
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        shown = re.match(r"\s*(`+)(.+?)\1", cells[0]).group(2).strip()
        rows[shown] = _code(cells[1])
    return rows


def assert_documented(shown: str, line: str, places: dict[str, str] | None = None) -> None:
    """``line`` (the one line the command printed, ``error: `` and the verbose hint off) is what
    docs/errors.md shows for ``shown``, once ``places`` (actual text -> how the docs write it) and run-directory
    names (``<run>``) are put back."""
    line = line.removeprefix("error: ").split("  [verbose=true")[0]
    for actual, written in sorted((places or {}).items(), key=lambda kv: -len(kv[0])):
        line = line.replace(actual, written)
    line = RUN.sub("<run>", line)
    rows = documented()
    assert shown in rows, f"docs/errors.md has no row for `{shown}`; add:\n| `{shown}` | `{line}` |"
    assert rows[shown] == line, (
        f"docs/errors.md's row for `{shown}` is out of date:\n docs: {rows[shown]}\n code: {line}"
    )
