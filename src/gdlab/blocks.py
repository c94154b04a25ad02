"""Several optimizer steps per Lightning ``training_step`` (``steps_per_call``), where that changes no result.

Lightning's loop costs about a millisecond per ``training_step`` (hooks, progress tracking, the closure),
while a step of a small model costs a tenth of that: one optimizer step per ``training_step`` caps it far
below a hand-written loop. With ``steps_per_call = K > 1`` gdlab's datamodules serve blocks of ``K``
consecutive batches (:class:`gdlab.data.batches.Block`) and ``GDModule`` takes one optimizer step per batch
under Lightning's manual optimization: the same batches in the same order, ``zero_grad``, forward, backward
and step in the same order, so the same weights bit for bit. Each step is still counted in
``trainer.global_step``, written to the loggers under its own number, read by the divergence guard and
stops training where it would have stopped; checkpoints resume mid-block at the next batch.

``steps_per_call: auto`` (the default) takes :data:`AUTO` steps where nothing can tell the difference, and
1 (Lightning's automatic optimization, one step per ``training_step``) wherever something counts or acts
per ``training_step``: :func:`issues` lists them. An integer > 1 is refused where one of them applies.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from omegaconf import DictConfig

from gdlab.data.base import InMemoryDataModule
from gdlab.errors import ConfigError, show

log = logging.getLogger(__name__)

AUTO = 32  # optimizer steps per training_step under ``auto``: Lightning's cost per step falls ~30-fold
_PER_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end")
_TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def steps_per_call(cfg: DictConfig, datamodule: Any, module: Any, trainer: L.Trainer) -> int:
    """The optimizer steps per ``training_step`` for this run's ``steps_per_call`` setting."""
    setting = cfg.get("steps_per_call", "auto")
    if setting != "auto" and (isinstance(setting, bool) or not isinstance(setting, int) or setting < 1):
        raise ConfigError(
            f"steps_per_call={show(setting)} must be auto or an integer >= 1 (optimizer steps per Lightning "
            "training_step): pass e.g. steps_per_call=auto"
        )
    k = AUTO if setting == "auto" else setting
    found = issues(cfg, datamodule, module, trainer, k) if k > 1 else []
    if not found:
        log.debug("steps_per_call=%s: %d optimizer steps per training_step", setting, k)
        return k
    if setting == "auto":
        log.debug("steps_per_call=auto: 1 (%s)", found[0])
        return 1
    raise ConfigError(
        f"steps_per_call={setting} cannot apply here: {found[0]}; use steps_per_call=auto (it takes 1 here) "
        "or steps_per_call=1"
    )


def issues(cfg: DictConfig, datamodule: Any, module: Any, trainer: L.Trainer, k: int) -> list[str]:
    """Why this run cannot take ``k`` optimizer steps per ``training_step`` (empty: blocks change nothing)."""
    found = []
    if not isinstance(datamodule, InMemoryDataModule):
        found.append(f"the datamodule ({type(datamodule).__name__}) serves single batches")
    for hook in _TRANSFER_HOOKS:
        if getattr(type(datamodule), hook, None) is not getattr(L.LightningDataModule, hook):
            found.append(f"the datamodule's {hook} expects single batches")
    if trainer.world_size > 1:
        found.append("DDP synchronises gradients once per training_step")
    if not str(trainer.precision).endswith("-true"):
        found.append(f"trainer.precision={trainer.precision} scales the loss per training_step")
    if trainer.gradient_clip_val:
        found.append(f"trainer.gradient_clip_val={trainer.gradient_clip_val} clips in Lightning's step")
    if trainer.accumulate_grad_batches != 1:
        found.append(
            f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} counts training_steps"
        )
    if getattr(module, "scheduler_factory", None) is not None:
        found.append("a learning-rate schedule is stepped by Lightning per training_step or epoch")
    if trainer.fast_dev_run or trainer.overfit_batches:
        found.append("debug runs (fast_dev_run, overfit_batches) count training_steps")
    if trainer.limit_train_batches not in (None, 1.0):
        found.append(f"trainer.limit_train_batches={trainer.limit_train_batches} counts training_steps")
    if trainer.val_check_interval not in (None, 1.0) or trainer.check_val_every_n_epoch is None:
        found.append(f"trainer.val_check_interval={trainer.val_check_interval} counts training_steps")
    for key in ("min_epochs", "min_steps"):
        if (cfg.get("trainer") or {}).get(key):
            found.append(f"trainer.{key} keeps Lightning training past a stop between training_steps")
    found += _max_steps_issue(datamodule, trainer, k)
    found += _callback_issues(cfg, trainer)
    return found


def _max_steps_issue(datamodule: Any, trainer: L.Trainer, k: int) -> list[str]:
    """A ``max_steps`` that ends inside an epoch's last block would end an epoch's loop early (Lightning would
    validate there, which one step per training_step does not)."""
    max_steps = trainer.max_steps
    if not (max_steps and max_steps > 0) or not isinstance(datamodule, InMemoryDataModule):
        return []
    per_epoch = datamodule.train_dataloader().n_batches
    last_block = (per_epoch - 1) // k * k
    if last_block < max_steps % per_epoch:
        return [f"trainer.max_steps={max_steps} ends inside the last block of {k} batches of an epoch"]
    return []


def _callback_issues(cfg: DictConfig, trainer: L.Trainer) -> list[str]:
    """Callbacks that act per ``training_step``: their own per-batch hooks, or a step-counting trigger."""
    found = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and not str(node.get("_target_", "")).startswith("gdlab."):
            for key in ("every_n_train_steps", "train_time_interval"):
                if node.get(key):
                    found.append(f"callbacks.{name}.{key}={show(node.get(key))} counts training_steps")
    for callback in trainer.callbacks:
        # Progress bars only draw; checkpoints were checked above by their triggers; gdlab's callbacks act
        # per optimizer step (torch's optimizer step hooks) or per epoch.
        if isinstance(callback, (ProgressBar, ModelCheckpoint)) or type(callback).__module__.startswith(
            "gdlab."
        ):
            continue
        for hook in _PER_BATCH_HOOKS:
            if getattr(type(callback), hook, None) is not getattr(Callback, hook):
                found.append(
                    f"the callback {type(callback).__name__} has {hook}, called once per training_step"
                )
                break
    return found


def adopt_checkpoint(
    cfg: DictConfig, datamodule: Any, module: Any, trainer: L.Trainer, saved: int, named: str
) -> None:
    """Resume with the ``steps_per_call`` the checkpoint was written with: Lightning keeps its step count in
    the state of the optimization it ran (automatic or manual), and its epoch position in blocks."""
    if saved == module.steps_per_call:
        return
    setting = cfg.get("steps_per_call", "auto")
    found = issues(cfg, datamodule, module, trainer, saved) if saved > 1 else []
    if setting == "auto" and not found:
        log.debug("steps_per_call=%d, as in %s", saved, named)
        module.set_steps_per_call(saved)
        return
    if found:
        raise ConfigError(
            f"{named} was trained with steps_per_call={saved}, which cannot apply now: {found[0]}; resume with "
            "the settings it was trained with"
        )
    raise ConfigError(
        f"{named} was trained with steps_per_call={saved}, not {setting}: resume with steps_per_call={saved} "
        "(or auto)"
    )
