"""scripts/coverage_floor.py, the last step of `bash scripts/dev.sh test`: on a small coverage.json and
pyproject.toml written here, its exit status and the lines it prints."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, child_env

SCRIPT = REPO_ROOT / "scripts" / "coverage_floor.py"
PACKAGES = ["gdlab", "hydra_plugins.gdlab_plugins"]


def _load():
    spec = importlib.util.spec_from_file_location("coverage_floor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


coverage_floor = _load()


def _write(folder: Path, percents: dict[str, float], notes: dict[str, str] | None = None, floor: int = 85):
    """A coverage.py JSON report with these files' percentages, and the pyproject sections the script reads."""
    files = {path: {"summary": {"percent_covered": p}} for path, p in percents.items()}
    (folder / "coverage.json").write_text(json.dumps({"files": files}))
    lines = ["[tool.coverage.run]", f"source_pkgs = {json.dumps(PACKAGES)}", "[tool.gdlab.coverage]"]
    lines += [f"floor = {floor}", "[tool.gdlab.coverage.notes]"]
    lines += [f"{json.dumps(path)} = {json.dumps(why)}" for path, why in (notes or {}).items()]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n")


def _floor(folder: Path, monkeypatch, capsys) -> tuple[int, list[str]]:
    monkeypatch.chdir(folder)  # the script reads pyproject.toml where it runs: the repository root
    code = coverage_floor.main("coverage.json")
    return code, capsys.readouterr().out.splitlines()


GOOD = {
    "src/gdlab/optim.py": 100.0,
    "src/gdlab/train.py": 85.0,  # exactly at the floor passes
    "src/hydra_plugins/gdlab_plugins/__init__.py": 92.5,
}


def test_every_module_at_or_above_the_floor_passes(tmp_path, monkeypatch, capsys):
    _write(tmp_path, GOOD)
    assert _floor(tmp_path, monkeypatch, capsys) == (
        0,
        ["coverage: every module of gdlab, hydra_plugins.gdlab_plugins is at or above 85% (or has a note)"],
    )


@pytest.mark.parametrize("path", ["src/gdlab/train.py", "src/hydra_plugins/gdlab_plugins/__init__.py"])
def test_a_module_below_the_floor_fails_and_says_how_to_fix_it(tmp_path, monkeypatch, capsys, path):
    _write(tmp_path, {**GOOD, path: 84.96})
    code, lines = _floor(tmp_path, monkeypatch, capsys)
    assert code == 1
    assert lines == [
        f"coverage: {path} is 85.0% covered, below the floor of 85%: test it, or say why",
        "  in pyproject.toml [tool.gdlab.coverage.notes]",
    ]  # 84.96 prints as 85.0 but is below: the comparison uses the exact number


def test_a_note_lets_a_module_stay_below_and_is_printed(tmp_path, monkeypatch, capsys):
    notes = {
        "src/gdlab/profiler.py": "hooks Lightning calls only with a profiler",
        "src/gdlab/gone.py": "old",
    }
    _write(tmp_path, {**GOOD, "src/gdlab/profiler.py": 40.0}, notes)
    code, lines = _floor(tmp_path, monkeypatch, capsys)
    assert code == 0
    assert lines == [
        "coverage note: src/gdlab/profiler.py 40.0%: hooks Lightning calls only with a profiler",
        "coverage note: src/gdlab/gone.py not measured: old",
        "coverage: every module of gdlab, hydra_plugins.gdlab_plugins is at or above 85% (or has a note)",
    ]


def test_a_package_that_was_not_measured_fails(tmp_path, monkeypatch, capsys):
    """A typo in source_pkgs, or tests that never import the package: no module of it can be below the
    floor, so the script says it saw none."""
    _write(tmp_path, {"src/gdlab/optim.py": 100.0})
    code, lines = _floor(tmp_path, monkeypatch, capsys)
    assert code == 1
    assert lines == [
        "coverage: hydra_plugins.gdlab_plugins (in [tool.coverage.run] source_pkgs) is not in coverage.json: "
        "nothing of it was measured"
    ]


def test_the_command_exits_with_the_floors_status(tmp_path):
    """As dev.sh runs it: `python scripts/coverage_floor.py coverage.json` in the repository root."""
    _write(tmp_path, {**GOOD, "src/gdlab/train.py": 50.0})
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "coverage.json"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "src/gdlab/train.py is 50.0% covered" in proc.stdout, (
        proc.stdout + proc.stderr
    )


def test_the_floor_measures_every_package_of_src():
    """The real settings: coverage measures each code package under src/ (a new one is not left out)."""
    measured = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["coverage"]["run"][
        "source_pkgs"
    ]
    src = REPO_ROOT / "src"
    packages = {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}
    plugins = {
        f"hydra_plugins.{p.name}" for p in (src / "hydra_plugins").iterdir() if (p / "__init__.py").is_file()
    }
    assert set(measured) == packages | plugins == {"gdlab", "hydra_plugins.gdlab_plugins"}
