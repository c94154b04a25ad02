"""Every option of every config group composes, and the pieces it names can be built."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from gdlab.factory import build
from tests.conftest import CONFIG_DIR

GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and any(p.glob("*.yaml")))
# hydra/ configures Hydra itself (run dirs); the train.py subprocess tests exercise it.
OPTIONS = [(g, f.stem) for g in GROUPS if g != "hydra" for f in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]


def test_the_groups_the_design_names_exist():
    for group in [
        "data",
        "model",
        "loss",
        "optimizer",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "hydra",
        "debug",
    ]:
        assert group in GROUPS


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(cfg_factory, group, option):
    cfg = cfg_factory(f"{group}={option}")
    assert "seed" in cfg and "data" in cfg and "trainer" in cfg
    if group in ("logger", "callbacks"):
        for node in (cfg.get(group) or {}).values():
            instantiate(node)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_model_sizes_follow_from_the_data(cfg_factory, model):
    cfg = cfg_factory(f"model={model}", "data.n_features=7", "trainer=cpu")
    datamodule, module, _ = build(cfg)
    first = next(p for p in module.net.parameters() if p.ndim == 2)
    assert first.shape[1] == 7
    assert datamodule.input_shape == (7,)
