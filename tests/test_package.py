"""The configs ship inside the package: a wheel installed without -e runs from any directory, and users add
configs of their own with --config-dir or hydra.searchpath, without touching gdlab."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, child_env, run_train

TINY = ("trainer.max_epochs=1", "data.n_samples=100", "logger=none", "callbacks=minimal", "trainer=cpu")


@pytest.mark.slow
def test_a_built_wheel_installed_elsewhere_runs_gdlab_train_from_an_unrelated_directory(tmp_path):
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation", "-w", str(dist)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("gdlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gdlab/conf/train.yaml" in names and "gdlab/conf/model/mlp.yaml" in names
    assert "hydra_plugins/gdlab_plugins/__init__.py" in names
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # The installed copy, not the checkout: it comes first on the path, and the checkout is not the cwd.
    env = child_env({"PYTHONPATH": str(site)})
    where = subprocess.run(
        [sys.executable, "-c", "import gdlab; print(gdlab.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    proc = subprocess.run(
        [str(site / "bin" / "gdlab-train"), "model=mlp", f"paths.root={work / 'outputs'}", *TINY],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (work / "outputs" / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert "_target_: gdlab.models.MLP" in (run_dir / "config.yaml").read_text()


def _user_configs(root: Path) -> Path:
    """A user's own config folder: a datamodule option and an experiment, no gdlab file touched."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "wide.yaml").write_text(
        "defaults:\n  - linear\nn_features: 7\nnoise_std: 0.0\n"  # gdlab's option, extended
    )
    (root / "experiment").mkdir()
    (root / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: wide\nmodel:\n  init: 0.0\n"
    )
    return root


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_users_add_their_own_configs_without_editing_gdlab(tmp_path, how):
    configs = _user_configs(tmp_path / "my_configs")
    where = (
        ["--config-dir", str(configs)] if how == "--config-dir" else [f"hydra.searchpath=[file://{configs}]"]
    )
    proc = run_train(*where, "experiment=mine", f"paths.root={tmp_path / 'out'}", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    config = (run_dir / "config.yaml").read_text()
    assert "n_features: 7" in config and "init: 0.0" in config
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def test_the_wheels_package_list_names_every_package_under_src_and_the_config_tree():
    """pyproject.toml lists the packages by hand (conf/ maps to gdlab.conf): a new package under src/ that
    is not listed would be missing from the wheel."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    src = REPO_ROOT / "src"
    found = {
        ".".join(init.parent.relative_to(src).parts)
        for init in src.rglob("__init__.py")
        if "egg-info" not in str(init)
    }
    assert set(config["packages"]) == found | {"gdlab.conf", "hydra_plugins"}
    assert config["package-dir"] == {"": "src", "gdlab.conf": "conf"}
