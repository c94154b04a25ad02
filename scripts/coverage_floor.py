"""Fail when a module of src/ is covered below the floor without a note saying why, or when a package the
floor covers was not measured at all.

Reads coverage.py's JSON report (`pytest --cov --cov-report=json:coverage.json`) and, from pyproject.toml, the
floor and the notes ([tool.gdlab.coverage]) and the packages measured ([tool.coverage.run] source_pkgs: gdlab
and hydra_plugins.gdlab_plugins). Run from the repository root: `python scripts/coverage_floor.py coverage.json`.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path


def main(report: str = "coverage.json") -> int:
    pyproject = tomllib.loads(Path("pyproject.toml").read_text())
    settings = pyproject["tool"]["gdlab"]["coverage"]
    floor, notes = settings["floor"], settings.get("notes", {})
    packages = pyproject["tool"]["coverage"]["run"].get("source_pkgs", [])
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
    # a package with no file in the report was not measured (a typo in source_pkgs, tests that never import
    # it): its modules cannot be below the floor, so without this check they would pass unseen
    unmeasured = [pkg for pkg in packages if not any(f"/{pkg.replace('.', '/')}/" in f"/{p}" for p in files)]
    for pkg in unmeasured:
        print(
            f"coverage: {pkg} (in [tool.coverage.run] source_pkgs) is not in {report}: nothing of it was measured"
        )
    for path, percent in below.items():
        print(f"coverage: {path} is {percent:.1f}% covered, below the floor of {floor}%: test it, or say why")
    if below:
        print("  in pyproject.toml [tool.gdlab.coverage.notes]")
    if below or unmeasured:
        return 1
    print(f"coverage: every module of {', '.join(packages)} is at or above {floor}% (or has a note)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
