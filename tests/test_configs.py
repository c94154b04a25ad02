"""Every option of every config group composes and builds: the datamodule set up on tiny data, the network
sized from it, the loss, the optimizer on the network's parameters, the callbacks, loggers and Trainer;
every data x model x loss combination either takes a gradient step or is refused at start-up with one line
naming the two settings that do not fit."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from gdlab.errors import ConfigError, describe
from gdlab.factory import build
from tests.conftest import CONFIG_DIR, make_cfg
from tests.test_images import fake_mnist

CONF = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    return sorted(f.stem for f in (CONF / group).glob("*.yaml"))


# Tiny versions of each dataset, so that building one takes milliseconds. A new data option must say here
# how to make it small (the test below fails until it does).
TINY_DATA = {
    "linear": ["data.n_samples=40"],
    "polynomial": ["data.n_samples=40"],
    "digits": [],
    "mnist": ["data.download=false", "data.data_dir={mnist}"],
    "fashion_mnist": ["data.download=false", "data.data_dir={mnist}"],
    "csv": ["data.path={table}"],
}
IMAGES = {"digits", "mnist", "fashion_mnist"}  # classification data of images (C, H, W)


def tiny(tmp_path: Path, data: str) -> list[str]:
    assert data in TINY_DATA, f"data={data}: add tiny overrides for it to TINY_DATA in {__file__}"
    if not (tmp_path / "mnist").exists():
        fake_mnist(tmp_path / "mnist", gz=False)  # uncompressed: no checksum needed
        rows = (f"{i % 7},{i % 5},{0.5 * i - 1}" for i in range(40))
        (tmp_path / "table.csv").write_text("a,b,y\n" + "\n".join(rows) + "\n")
    return [o.format(mnist=tmp_path / "mnist", table=tmp_path / "table.csv") for o in TINY_DATA[data]]


def the_optimizer(module) -> torch.optim.Optimizer:
    """What configure_optimizers returns: the optimizer, or Lightning's dict holding it and its scheduler."""
    configured = module.configure_optimizers()
    return configured["optimizer"] if isinstance(configured, dict) else configured


COMBOS = list(itertools.product(options("data"), options("model"), options("loss")))


@pytest.mark.parametrize(("data", "model", "loss"), COMBOS, ids=["-".join(c) for c in COMBOS])
def test_every_data_model_loss_combination_steps_or_is_refused_in_one_line(tmp_path, data, model, loss):
    overrides = [f"data={data}", f"model={model}", f"loss={loss}", "trainer=cpu", "logger=none"]
    cfg = make_cfg(tmp_path / "run", *overrides, *tiny(tmp_path, data))
    fits = (loss != "cross_entropy" or data in IMAGES) and (model != "cnn" or data in IMAGES)
    if not fits:
        with pytest.raises(ConfigError) as info:
            build(cfg)
        line = describe(info.value)
        culprit = "loss" if loss == "cross_entropy" else "model"
        # named as chosen (`loss=cross_entropy`; `loss._target_=...` where no Hydra run records the choice)
        assert re.match(rf"{culprit}(=|\._target_=)", line) and " data" in line and "\n" not in line, line
        return
    datamodule, module, _trainer = build(cfg)
    x, y = next(iter(datamodule.train_dataloader()))
    assert tuple(x.shape[1:]) == tuple(datamodule.input_shape)
    optimizer = the_optimizer(module)
    before = [p.detach().clone() for p in module.parameters()]
    loss_value = module.loss_fn(module(x), y)
    assert torch.isfinite(loss_value)
    loss_value.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


OTHER_GROUPS = sorted(
    g.name for g in CONF.iterdir() if g.is_dir() and g.name not in ("data", "model", "loss", "hydra")
)
NEEDS_A_GPU = {("trainer", "gpu"), ("trainer", "ddp")}
# MLflow creates its SQLite store (every table, ~2-10 s here) when its logger is built
SLOW_TO_BUILD = {("logger", "mlflow")}
OPTIONS = [
    pytest.param(g, o, id=f"{g}={o}", marks=[pytest.mark.slow] if (g, o) in SLOW_TO_BUILD else [])
    for g in OTHER_GROUPS
    for o in options(g)
]


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_of_the_other_groups_builds_what_it_names(tmp_path, group, option):
    # paths.root: the MLflow store and any other file a logger writes there go to the test's directory
    cfg = make_cfg(tmp_path / "run", f"{group}={option}", "data.n_samples=40", f"paths.root={tmp_path}")
    if (group, option) in NEEDS_A_GPU and not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^trainer: No supported gpu backend found! Use trainer=cpu"):
            build(cfg)
        return
    _datamodule, module, trainer = build(cfg)
    named = cfg.get(group) if group in ("callbacks", "logger") else None
    for node in (named or {}).values():  # each callback / logger the option names is in the Trainer
        if node is not None:
            cls = node._target_.rsplit(".", 1)[1]
            built = [type(c).__name__ for c in (*trainer.callbacks, *trainer.loggers)]
            assert cls in built, (cls, built)
    if group == "optimizer":
        assert type(the_optimizer(module)).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
    assert isinstance(trainer, Trainer) and trainer.callbacks is not None


@pytest.mark.parametrize("data", options("data"))
def test_fractional_batch_limits_work_on_every_datamodule(tmp_path, caplog, data):
    """Lightning users write `++trainer.limit_val_batches=0.1`; on a split of one batch that is less than one
    batch, which Lightning refuses: gdlab takes one batch and says so."""
    from gdlab.train import train

    limits = [
        "++trainer.limit_train_batches=0.5",
        "++trainer.limit_val_batches=0.1",
        "++trainer.limit_test_batches=0.1",
    ]
    fast = [
        "trainer=cpu",
        "logger=none",
        "callbacks=minimal",
        "trainer.max_epochs=1",
    ]
    cfg = make_cfg(
        tmp_path / "run", f"data={data}", *fast, "data.batch_size=null", *limits, *tiny(tmp_path, data)
    )
    with caplog.at_level("INFO", logger="gdlab.factory"):
        record = train(cfg)
    assert record["status"] == "completed" and record["val/loss"] == record["val/loss"], record
    said = [r.getMessage() for r in caplog.records if r.name == "gdlab.factory"]
    assert said == [
        f"trainer.limit_{split}_batches={fraction} of 1 batch is less than one batch: taking 1"
        for split, fraction in (("train", 0.5), ("val", 0.1), ("test", 0.1))
    ]
