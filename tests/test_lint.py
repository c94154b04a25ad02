"""The code is ruff-clean and ruff-formatted, and the pre-commit hooks that keep it so are valid."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    proc = subprocess.run([_tool("ruff"), *command], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_pre_commit_config_is_valid():
    config = REPO_ROOT / ".pre-commit-config.yaml"
    proc = subprocess.run(
        [_tool("pre-commit"), "validate-config", str(config)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
