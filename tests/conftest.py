"""Shared helpers: compose the real configs (Hydra's compose API) and run train.py as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gdlab.config import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_cfg(output_dir: Path | str, *overrides: str) -> DictConfig:
    """The composed train config, writing into ``output_dir`` (no Hydra run dir needed)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


def run_train(
    *args: str,
    cwd: Path = REPO_ROOT,
    timeout: float = 300,
    script: str = "train.py",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` (or another root script) in a subprocess; capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def cfg_factory(tmp_path):
    """``cfg_factory(*overrides)`` -> a composed config whose run dir is ``tmp_path``."""
    return lambda *overrides: make_cfg(tmp_path, *overrides)
