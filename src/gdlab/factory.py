"""``build(cfg)``: the datamodule, the module and the Trainer of a run, from its composed config.

Training and evaluation both build through here. This is the layer that knows which config key each
component comes from: whatever a component raises in its own words, while it is built (:func:`building`)
or later inside ``fit`` (:func:`blame`), reaches the user as one line naming the setting
(``optimizer.lr=-1: Invalid learning rate: -1 (must be finite and > 0)``). The checks that span
several groups (a loss that needs classes, a model that needs images) run in between, as soon as
the pieces they compare exist.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gdlab import validate
from gdlab.callbacks.steplog import StepLog
from gdlab.callbacks.stop import StopAtStepEnd
from gdlab.errors import ConfigError, SettingError, first_line, quoted_argument, show

log = logging.getLogger(__name__)


@contextmanager
def building(key: str, node: Any) -> Iterator[None]:
    """Check the node's argument types, then turn an error raised while building config node ``key`` into
    a :class:`SettingError`."""
    validate.check_argument_types(key, node)
    try:
        yield
    except ConfigError:
        raise  # already names its settings
    except InstantiationException as err:
        if err.__cause__ is not None and str(err).startswith("Error in call to target"):
            raise SettingError(key, node, err.__cause__) from err.__cause__
        # e.g. "Error locating target 'gdlab.models.Foo'": Hydra's own first line, without its env-var hint
        reason = ValueError(first_line(err).split(", set env var HYDRA_FULL_ERROR")[0])
        raise SettingError(key, None, reason) from err
    except Exception as err:
        raise SettingError(key, node, err) from err


# The module of a run config written before the module group existed (old checkpoints' configs).
DEFAULT_MODULE = {"_target_": "gdlab.module.GDModule"}


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Check the settings, seed everything with ``seed``, then instantiate the datamodule, the network,
    loss, optimizer and scheduler factories, the module that trains them, callbacks, loggers and Trainer."""
    validate.check_settings(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    with building("data", cfg.data):
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
    validate.check_datamodule(cfg, datamodule)
    validate.check_data_model_loss(cfg, datamodule)
    with building("model", cfg.model):

        def network() -> Any:
            return instantiate(
                cfg.model, input_shape=datamodule.input_shape, num_outputs=datamodule.num_outputs
            )

        validate.check_network_memory(cfg, datamodule, network)
        net = network()
    validate.check_network_outputs(cfg, net, datamodule)
    with building("loss", cfg.loss):
        loss_fn = instantiate(cfg.loss)
    with building("optimizer", cfg.optimizer):
        optimizer = instantiate(cfg.optimizer)
        probe = optimizer(net.parameters())  # the factory's arguments are checked now, not inside fit
    scheduler, schedule = _build_scheduler(cfg, probe)
    module_node = cfg.get("module") or OmegaConf.create(DEFAULT_MODULE)
    with building("module", module_node):
        module = instantiate(
            module_node,
            net=net,
            loss_fn=loss_fn,
            optimizer=optimizer,
            scheduler=scheduler,
            schedule=schedule,
            task=datamodule.task,
            num_outputs=datamodule.num_outputs,
        )
        if not isinstance(module, L.LightningModule):
            raise TypeError(f"{type(module).__name__} is not a LightningModule")
    # Every checkpoint carries the run's config (primitives only), so eval.py can rebuild the run from it.
    module.hparams["config"] = OmegaConf.to_container(cfg, resolve=True)
    # Every run writes each optimizer step's train/loss (and what callbacks add) through its StepLog, and
    # stops on a signal at the end of an optimizer step (after the other callbacks' end of that step).
    steps = StepLog(flush_every=cfg.get("log_flush_steps", 50))
    callbacks = [steps, *_build_group(cfg, "callbacks"), StopAtStepEnd()]
    loggers = _build_group(cfg, "logger")
    with building("trainer", cfg.trainer):
        limits = at_least_one_batch(cfg, datamodule)
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **limits)
    validate.check_world_size(cfg, datamodule, trainer)
    return datamodule, module, trainer


def blame(cfg: DictConfig, err: BaseException) -> BaseException:
    """An error raised inside ``fit`` (by Lightning or a component), as a :class:`SettingError` when its
    message quotes the value of exactly one component's argument (``ModelCheckpoint(monitor='abc')``, the
    scheduler's ``monitor``); otherwise ``err`` itself."""
    if isinstance(err, ConfigError):
        return err  # names its settings already
    found = []
    nodes = [
        (k, cfg.get(k)) for k in ("data", "model", "loss", "optimizer", "scheduler", "module", "trainer")
    ]
    for group in ("callbacks", "logger"):
        nodes += [(f"{group}.{name}", node) for name, node in (cfg.get(group) or {}).items()]
    for key, node in nodes:
        target = str(node.get("_target_", "")).rpartition(".")[2] if isinstance(node, DictConfig) else ""
        if isinstance(node, DictConfig) and quoted_argument(node, str(err)) is not None:
            found.append((key, node))
        elif target and f"`{target}`" in str(err) and key.startswith(("callbacks.", "logger.")):
            found.append((key, None))  # Lightning names the callback's class: `LearningRateMonitor`
    if (
        len(found) > 1
    ):  # e.g. a monitor: the scheduler's ("`monitor` key in lr scheduler dict") or a callback's
        words = str(err).lower().replace("_", " ")
        found = [(k, n) for k, n in found if k.rpartition(".")[2].replace("_", " ") in words] or found
    return SettingError(found[0][0], found[0][1], err) if len(found) == 1 else err


def at_least_one_batch(cfg: DictConfig, datamodule: L.LightningDataModule) -> dict[str, int]:
    """``trainer.limit_<split>_batches`` given as a fraction that leaves none of a small split's batches
    (Lightning refuses ``0.1`` of 5 batches) becomes one batch, and the log says so: a fraction means
    "about this share", on any datamodule."""
    limits = {}
    for split in ("train", "val", "test"):
        key = f"limit_{split}_batches"
        fraction = cfg.trainer.get(key)
        loader = getattr(datamodule, f"{split}_dataloader", None)
        if not (isinstance(fraction, float) and 0 < fraction < 1) or loader is None:
            continue
        try:
            n_batches = len(loader())
        except (TypeError, NotImplementedError):  # a loader without a length: Lightning decides
            continue
        if int(fraction * n_batches) < 1:
            limits[key] = 1
            of = f"{n_batches} batch" + ("es" if n_batches != 1 else "")
            log.info("trainer.%s=%s of %s is less than one batch: taking 1", key, fraction, of)
    return limits


# Keys of a scheduler node that are Lightning's (how the schedule is stepped), not the scheduler's arguments.
SCHEDULE_KEYS = ("interval", "frequency", "monitor")


def _build_scheduler(cfg: DictConfig, optimizer: Any) -> tuple[Any, dict[str, Any]]:
    """The scheduler factory (None for a constant lr) and Lightning's scheduler-dict keys of ``cfg.scheduler``;
    the factory is called once on ``optimizer`` (a throwaway one) so bad arguments fail now."""
    node = cfg.get("scheduler")
    if not node:
        return None, {}
    if not (isinstance(node, DictConfig) and "_target_" in node):
        raise ConfigError(
            f"scheduler={show(OmegaConf.to_container(node) if OmegaConf.is_config(node) else node)} is not a "
            "schedule: pick one of conf/scheduler/ (e.g. scheduler=cosine), or scheduler=none"
        )
    resolved = OmegaConf.to_container(node, resolve=True)
    schedule = {k: resolved.pop(k) for k in SCHEDULE_KEYS if k in resolved}
    with building("scheduler", node):
        factory = instantiate(resolved)
        factory(optimizer)
    return factory, schedule


def _build_group(cfg: DictConfig, group: str) -> list[Any]:
    """The objects of a group whose options are a dict of named nodes (``callbacks``, ``logger``)."""
    built = []
    for name, node in (cfg.get(group) or {}).items():
        if node is not None and not (isinstance(node, DictConfig) and "_target_" in node):
            raise ConfigError(
                f"{group}.{name}={show(OmegaConf.to_container(node) if OmegaConf.is_config(node) else node)} "
                f"is not a component: give it a _target_ (see conf/{group}/), or null to leave it out"
            )
        if node is not None:
            with building(f"{group}.{name}", node):
                built.append(instantiate(node))
    return built
