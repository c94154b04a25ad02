"""conf/local/: one's own settings, read with no flag when conf/local/default.yaml exists, ignored (and
nothing said) when it does not; git-ignored, and left out of a wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import CONFIG_DIR, REPO_ROOT, child_env

LOCAL = "# @package _global_\npaths:\n  root: /scratch/me/runs\n  data_dir: /datasets\nseed: 7\n"


def _compose(config_dir, name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_local_default_yaml_is_read_when_it_exists_and_the_command_line_still_wins(tmp_path):
    tree = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, tree, ignore=shutil.ignore_patterns("local", "__pycache__"))
    assert _compose(tree, "train").paths.root == "outputs"  # no local/: the defaults, no error
    (tree / "local").mkdir()
    (tree / "local" / "default.yaml").write_text(LOCAL)
    cfg = _compose(tree, "train")
    assert (cfg.paths.root, cfg.paths.data_dir, cfg.seed) == ("/scratch/me/runs", "/datasets", 7)
    assert _compose(tree, "train", "seed=3", "paths.root=elsewhere").paths.root == "elsewhere"
    assert _compose(tree, "eval", "ckpt_path=x.ckpt").paths.root == "/scratch/me/runs"  # eval.py too


def test_local_is_git_ignored_and_the_command_line_says_nothing_without_it(tmp_path):
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "conf/local/default.yaml"], cwd=REPO_ROOT, capture_output=True
    )
    assert ignored.returncode == 0, "conf/local/ must be git-ignored"
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(LOCAL)
    for searchpath, root in (
        (f"hydra.searchpath=[file://{tmp_path}]", "/scratch/me/runs"),
        (None, "outputs"),
    ):
        args = [
            sys.executable,
            str(REPO_ROOT / "train.py"),
            "--cfg",
            "job",
            *([searchpath] if searchpath else []),
        ]
        proc = subprocess.run(
            args, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert yaml.safe_load(proc.stdout)["paths"]["root"] == root
