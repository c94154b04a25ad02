"""Every option of every config group composes and builds what it names, read from the built objects (the
schedule torch steps, the Trainer's strategy, the callbacks and loggers it holds, what an experiment sets);
every data x model x loss combination either takes a gradient step or is refused at start-up with one line
naming the two settings that do not fit."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning import Trainer
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import SimpleProfiler
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from omegaconf import DictConfig, open_dict
from torch.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau, SequentialLR, StepLR

from gdlab.errors import ConfigError, describe
from gdlab.factory import build
from gdlab.integrations.tensorboard import TensorBoardLogger
from gdlab.models import MLP
from gdlab.module import GDModule
from gdlab.optim import PlainSGD
from tests.conftest import CONFIG_DIR, compose_config, make_cfg
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
PAIRS = [(g, o) for g in OTHER_GROUPS for o in options(g)]
OPTIONS = [
    pytest.param(g, o, id=f"{g}={o}", marks=[pytest.mark.slow] if (g, o) in SLOW_TO_BUILD else [])
    for g, o in PAIRS
]


class Built(NamedTuple):
    """What one option composed (``cfg``, Hydra's own node ``hydra``) and built, and where the run writes."""

    cfg: DictConfig
    hydra: DictConfig
    datamodule: Any
    module: Any
    trainer: Trainer
    out: Path

    def choice(self, group: str) -> str:
        """The option of ``group`` this config was composed with."""
        return self.hydra.runtime.choices[group]

    def callbacks(self) -> set[str]:
        return {type(c).__name__ for c in self.trainer.callbacks}

    def the(self, cls: type) -> Any:
        (found,) = [c for c in (*self.trainer.callbacks, *self.trainer.loggers) if isinstance(c, cls)]
        return found

    def schedule(self) -> tuple[torch.optim.Optimizer, dict | None]:
        configured = self.module.configure_optimizers()
        if isinstance(configured, dict):
            return configured["optimizer"], configured["lr_scheduler"]
        return configured, None


# "group=option" -> what building it must give. A new option must say here what it builds (the test
# below fails until it does); the checks read the built objects, not the YAML.
EXPECTED: dict[str, Callable[[Built], None]] = {}


def expects(*names: str) -> Callable[[Callable[[Built], None]], Callable[[Built], None]]:
    def register(check: Callable[[Built], None]) -> Callable[[Built], None]:
        for name in names:
            EXPECTED[name] = check
        return check

    return register


def _steps(scheduler, optimizer, n: int, metric: float | None = None) -> float:
    """The learning rate after ``n`` steps of the schedule."""
    for _ in range(n):
        optimizer.step()  # no gradients: changes nothing, keeps torch's step order
        scheduler.step(metric) if metric is not None else scheduler.step()
    return optimizer.param_groups[0]["lr"]


@expects("scheduler=none")
def _constant_lr(b: Built) -> None:
    optimizer, schedule = b.schedule()
    assert schedule is None and isinstance(optimizer, PlainSGD)


@expects("scheduler=step")
def _step_lr(b: Built) -> None:
    optimizer, schedule = b.schedule()
    assert isinstance(schedule["scheduler"], StepLR) and schedule["interval"] == "epoch"
    lr, every, gamma = b.cfg.optimizer.lr, b.cfg.scheduler.step_size, b.cfg.scheduler.gamma
    assert _steps(schedule["scheduler"], optimizer, every - 1) == lr  # constant for step_size epochs
    assert _steps(schedule["scheduler"], optimizer, 1) == pytest.approx(lr * gamma)  # then times gamma


@expects("scheduler=cosine")
def _cosine(b: Built) -> None:
    optimizer, schedule = b.schedule()
    assert isinstance(schedule["scheduler"], CosineAnnealingLR) and schedule["interval"] == "epoch"
    lr, epochs = b.cfg.optimizer.lr, b.trainer.max_epochs
    assert _steps(schedule["scheduler"], optimizer, epochs // 2) == pytest.approx(lr / 2)  # half-way: half
    assert _steps(schedule["scheduler"], optimizer, epochs - epochs // 2) == pytest.approx(
        b.cfg.scheduler.eta_min, abs=1e-12
    )  # at the last epoch: eta_min


@expects("scheduler=warmup_cosine")
def _warmup_cosine(b: Built) -> None:
    optimizer, schedule = b.schedule()
    assert isinstance(schedule["scheduler"], SequentialLR)
    lr, node = b.cfg.optimizer.lr, b.cfg.scheduler
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * node.start_factor)  # warming up
    assert _steps(schedule["scheduler"], optimizer, node.warmup_epochs) == pytest.approx(lr)  # warm
    rest = b.trainer.max_epochs - node.warmup_epochs
    assert _steps(schedule["scheduler"], optimizer, rest) == pytest.approx(node.eta_min, abs=1e-12)


@expects("scheduler=plateau")
def _plateau(b: Built) -> None:
    optimizer, schedule = b.schedule()
    assert isinstance(schedule["scheduler"], ReduceLROnPlateau)
    assert schedule["monitor"] == "val/loss" == b.cfg.optimized_metric  # a metric the module logs
    lr, node = b.cfg.optimizer.lr, b.cfg.scheduler
    assert _steps(schedule["scheduler"], optimizer, node.patience + 1, metric=1.0) == lr  # patient
    assert _steps(schedule["scheduler"], optimizer, 1, metric=1.0) == pytest.approx(lr * node.factor)


@expects("optimizer=sgd", "optimizer=momentum", "optimizer=nesterov", "optimizer=adam", "optimizer=adamw")
def _optimizer(b: Built) -> None:
    optimizer, _ = b.schedule()
    assert type(optimizer).__name__ == b.cfg.optimizer._target_.rsplit(".", 1)[1]
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(b.module.parameters())
    group = optimizer.param_groups[0]  # every setting of the option reached torch
    for key, value in b.cfg.optimizer.items():
        if not key.startswith("_"):
            assert group[key] == (tuple(value) if key == "betas" else value), key


@expects("module=default")
def _module(b: Built) -> None:
    assert isinstance(b.module, GDModule) and b.module.net is not None


@expects("trainer=default", "trainer=cpu")
def _one_device(b: Built) -> None:
    auto_gpu = b.choice("trainer") == "default" and torch.cuda.is_available()  # accelerator: auto
    assert isinstance(b.trainer.accelerator, CUDAAccelerator if auto_gpu else CPUAccelerator)
    assert b.trainer.num_devices == 1
    assert isinstance(b.trainer.strategy, SingleDeviceStrategy)
    assert b.trainer.max_epochs == b.cfg.trainer.max_epochs and b.trainer.default_root_dir == str(b.out)


@expects("trainer=ddp_cpu")
def _ddp_cpu(b: Built) -> None:
    strategy = b.trainer.strategy
    assert isinstance(strategy, DDPStrategy) and strategy.process_group_backend == "gloo"
    assert isinstance(b.trainer.accelerator, CPUAccelerator) and b.trainer.num_devices == 2


@expects("trainer=gpu", "trainer=ddp")  # only where a GPU is
def _gpu(b: Built) -> None:
    assert isinstance(b.trainer.accelerator, CUDAAccelerator)
    if b.cfg.trainer.get("strategy"):
        assert (
            isinstance(b.trainer.strategy, DDPStrategy) and b.trainer.strategy.process_group_backend == "nccl"
        )


@expects("debug=fdr")
def _fast_dev_run(b: Built) -> None:
    assert b.trainer.fast_dev_run is True and b.trainer.max_steps == 1  # one batch of each split
    assert [type(x).__name__ for x in b.trainer.loggers] == ["DummyLogger"]  # Lightning writes nothing


@expects("debug=limit")
def _limit(b: Built) -> None:
    node = b.cfg.trainer
    assert (
        b.trainer.max_epochs == node.max_epochs and b.trainer.limit_train_batches == node.limit_train_batches
    )
    assert (b.trainer.limit_val_batches, b.trainer.limit_test_batches) == (2, 2)


@expects("debug=overfit")
def _overfit(b: Built) -> None:
    assert b.trainer.overfit_batches == 1 and b.trainer.max_epochs == b.cfg.trainer.max_epochs
    x1, _ = next(iter(b.datamodule.train_dataloader()))
    x2, _ = next(iter(b.datamodule.train_dataloader()))
    assert torch.equal(x1, x2)  # no shuffling: the one batch is the same batch every epoch


@expects("debug=profiler")
def _profiler(b: Built) -> None:
    assert isinstance(b.trainer.profiler, SimpleProfiler)
    assert Path(b.trainer.profiler.dirpath) == b.out  # profile.txt in the run directory


@expects("experiment=lecture", "experiment=diverge", "experiment=ill_conditioned")
def _experiment(b: Built) -> None:
    ref = b.datamodule.closed_form()
    assert len(b.datamodule.train_dataloader()) == 1  # full batch: the critical learning rate is exact
    ratio = b.cfg.optimizer.lr / ref.critical_lr  # what each experiment is about
    name = b.choice("experiment")
    if name == "ill_conditioned":
        assert ref.condition_number > 100 and 0.5 < ratio < 1
    else:
        assert b.datamodule.input_shape == (1,) and b.trainer.precision == "64-true"
        assert all(torch.all(p == 0.5) for p in b.module.parameters())  # the textbook start
        assert (ratio > 1) == (name == "diverge"), ratio  # diverge steps past the critical rate
    assert ("DescentPictures" in b.callbacks()) == (name != "ill_conditioned")


@expects("experiment=lr_regimes")
def _lr_regimes(b: Built) -> None:
    from gdlab.lessons.lr_regimes import learning_rate

    assert b.hydra.mode == RunMode.MULTIRUN and "lr_regime" in b.hydra.sweeper.params
    ref = b.datamodule.closed_form()
    assert b.cfg.optimizer.lr == pytest.approx(learning_rate(b.cfg.lr_regime, ref))
    assert b.cfg.optimizer.lr == pytest.approx(0.5 * ref.critical_lr)  # 0.5c, the default regime
    assert {type(x).__name__ for x in b.trainer.loggers} == {"TensorBoardLogger", "CSVLogger"}
    assert instantiate(b.hydra.callbacks.lr_regimes).__class__.__name__ == "LrRegimesSummary"


@expects("experiment=nonconvex")
def _nonconvex(b: Built) -> None:
    assert b.hydra.mode == RunMode.MULTIRUN
    assert isinstance(b.module.net, MLP) and b.datamodule.input_shape == (1,)  # x only: degree 1
    assert {"HessianSpectrum"} <= b.callbacks() and "GradientDiagnostics" not in b.callbacks()
    assert instantiate(b.hydra.callbacks.nonconvex).__class__.__name__ == "NonconvexSummary"


@expects("experiment=lr_scan")
def _lr_scan(b: Built) -> None:
    assert b.hydra.mode == RunMode.MULTIRUN and "lr_multiple" in b.hydra.sweeper.params
    assert b.hydra.launcher._target_.endswith("VectorizedLauncher")  # 120 jobs as one stacked model
    ref = b.datamodule.closed_form()
    assert b.cfg.optimizer.lr == pytest.approx(0.5 * ref.critical_lr)  # lr_multiple 0.5, in units of c
    assert instantiate(b.hydra.callbacks.lr_scan).__class__.__name__ == "LrScanSummary"


@expects("hparams_search=lr_optuna")
def _optuna(b: Built) -> None:
    assert b.hydra.mode == RunMode.MULTIRUN
    assert type(instantiate(b.hydra.sweeper)).__name__ == "OptunaSweeper"  # the plugin takes its config
    assert isinstance(b.module.net, MLP)
    assert b.cfg.optimized_metric in {"val/loss", *b.module.val_metrics}


@expects("paths=default")
def _paths(b: Built) -> None:
    assert b.trainer.default_root_dir == str(b.out)
    assert Path(b.the(ModelCheckpoint).dirpath) == b.out / "checkpoints"
    assert Path(b.trainer.loggers[0].log_dir) == b.out  # TensorBoard's events in the run directory
    assert compose_config("train").paths.root == "outputs"  # relative to where train.py is started


@expects("logger=tensorboard")
def _tensorboard(b: Built) -> None:
    assert (
        isinstance(b.the(TensorBoardLogger), TensorBoardLogger)
        and Path(b.the(TensorBoardLogger).log_dir) == b.out
    )


@expects("logger=csv")
def _csv(b: Built) -> None:
    assert Path(b.the(CSVLogger).log_dir) == b.out / "csv"


@expects("logger=mlflow")
def _mlflow(b: Built) -> None:
    from lightning.pytorch.loggers import MLFlowLogger

    client = b.the(MLFlowLogger).experiment  # gdlab's logger, Lightning's own underneath: MLflow's client
    assert client.tracking_uri == f"sqlite:///{Path(b.cfg.paths.root)}/mlflow.db"  # one store per paths.root


@expects("logger=wandb")
def _wandb(b: Built) -> None:
    from lightning.pytorch.loggers import WandbLogger

    assert Path(b.the(WandbLogger).save_dir) == b.out  # in the run directory (offline: tests/test_loggers.py)


@expects("logger=none")
def _no_logger(b: Built) -> None:
    assert b.trainer.loggers == []


DEFAULT_CALLBACKS = {"ModelCheckpoint", "ProgressBar", "ModelSummary", "LastCheckpoint"}
GD_CALLBACKS = {"GradientDiagnostics", "DivergenceGuard", "DescentPictures"}
CALLBACKS = {
    "default": DEFAULT_CALLBACKS | GD_CALLBACKS,
    "minimal": DEFAULT_CALLBACKS | {"DivergenceGuard"},
    "none": set(),
    "diagnostics": {"GradientDiagnostics"},
    "divergence_guard": {"DivergenceGuard"},
    "early_stopping": {"EarlyStopping"},
    "last_checkpoint": {"LastCheckpoint"},
    "lr_monitor": {"LearningRateMonitor"},
    "model_checkpoint": {"ModelCheckpoint"},
    "model_summary": {"ModelSummary"},
    "pictures": {"DescentPictures"},
    "progress_bar": {"ProgressBar"},
}
ALL_CALLBACKS = set().union(*CALLBACKS.values())


@expects(*(f"callbacks={name}" for name in CALLBACKS))
def _callbacks(b: Built) -> None:
    option = b.choice("callbacks")
    named = CALLBACKS[option]
    # Lightning checkpoints where no callback does (and adds a progress bar of its own where none is given)
    lightnings = set() if named & {"ModelCheckpoint", "LastCheckpoint"} else {"ModelCheckpoint"}
    built = b.callbacks() & ALL_CALLBACKS
    assert built == named | lightnings, (option, built)
    assert "StepLog" in b.callbacks()  # every run's step log, whatever the option


def test_every_option_says_what_it_builds():
    assert sorted(EXPECTED) == sorted(f"{g}={o}" for g, o in PAIRS), "add the option to EXPECTED above"


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_of_the_other_groups_builds_what_it_names(tmp_path, group, option):
    out = tmp_path / "run"
    # paths.root: the MLflow store and any other file a logger writes there go to the test's directory
    cfg = compose_config(
        "train", f"paths.output_dir={out}", f"{group}={option}", "data.n_samples=40", f"paths.root={tmp_path}",
        return_hydra_config=True,
    )  # fmt: skip
    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    if (group, option) in NEEDS_A_GPU and not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^trainer: No supported gpu backend found! Use trainer=cpu"):
            build(cfg)
        return
    datamodule, module, trainer = build(cfg)
    EXPECTED[f"{group}={option}"](Built(cfg, hydra, datamodule, module, trainer, out))


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
