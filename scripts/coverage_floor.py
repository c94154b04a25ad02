"""Fail when a module of src/ is covered below the floor without a note saying why.

Reads coverage.py's JSON report (`pytest --cov --cov-report=json:coverage.json`); the floor and the notes
live in pyproject.toml under [tool.gdlab.coverage].
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path


def main(report: str = "coverage.json") -> int:
    settings = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["gdlab"]["coverage"]
    floor, notes = settings["floor"], settings.get("notes", {})
    files = json.loads(Path(report).read_text())["files"]
    below = {}
    for path, data in sorted(files.items()):
        percent = data["summary"]["percent_covered"]
        if percent < floor and path not in notes:
            below[path] = percent
    for path, why in notes.items():
        percent = files.get(path, {}).get("summary", {}).get("percent_covered")
        shown = "not measured" if percent is None else f"{percent:.1f}%"
        print(f"coverage note: {path} {shown}: {why}")
    if below:
        for path, percent in below.items():
            print(
                f"coverage: {path} is {percent:.1f}% covered, below the floor of {floor}%: test it, or say why"
            )
        print("  in pyproject.toml [tool.gdlab.coverage.notes]")
        return 1
    print(f"coverage: every module of src/ is at or above {floor}% (or has a note)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
