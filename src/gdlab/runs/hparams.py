"""TensorBoard's HParams tab for gdlab runs: the config values that matter, next to the final metrics.

Lightning logs the module's saved hyperparameters at fit start; with ``default_hp_metric: false`` that
writes no HParams entry. At the end of the run :func:`log_hparams` writes the one entry the tab shows
(gdlab's logger: :meth:`gdlab.integrations.tensorboard.TensorBoardLogger.log_hparams_entry`): a flat, short set of keys
(the chosen data, model, loss and optimizer, lr, batch size, seed, epochs, status, and every override
of the run), the final ``train/``, ``val/`` and ``test/`` metrics (losses first), and a trial ID that
starts with what tells the run apart (:func:`trial_id`).

The dashboard prints every number with five digits (a seed of 0 as ``0.0000``), so whole numbers are
text (``"0"``, ``"20"``): a column of values to tick, as seeds and epoch counts are. Learning rates
stay numbers (a range to filter, a log axis in the plots), also when typed as ``optimizer.lr=1``.
``data.batch_size`` is text too, ``"full"`` for ``null`` (full-batch gradient descent), so the column
keeps one type whichever runs are shown.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from gdlab.runs.rundir import run_overrides
from gdlab.runs.sweep import is_lr, metric_order

# Config groups whose chosen option names the run (e.g. data=linear, model=mlp).
GROUPS = ("data", "model", "loss", "optimizer", "trainer")
# Single values worth a column in every run.
KEYS = ("optimizer.lr", "data.batch_size", "seed", "trainer.max_epochs", "data.seed")
PLACE_KEYS = ("paths.", "ckpt_path", "resume", "verbose", "print_config", "hydra.")
# Shown first in the dashboard (with the run's overrides): what a gradient descent run is about.
SHOWN = ("optimizer.lr", "status")
# The time that starts run and sweep directory names (conf/hydra/default.yaml).
TIME = re.compile(r"^(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:-\d+)?)(?:_(.*))?$")


def _choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if v is not None}


def _scalar(key: str, value: Any) -> str | float | bool:
    """A value as the HParams tab shows it well: floats and bools as they are, learning rates as floats,
    other whole numbers and anything else as text (a ``null`` batch size as ``"full"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and is_lr(key):
        return float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return str(value)
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "full" if key.split(".")[-1] == "batch_size" else "null"
    return str(value).replace(" ", "")


def hparams_for(
    cfg: DictConfig,
    status: str | None = None,
    overrides: Sequence[str] | None = None,
    choices: Mapping[str, Any] | None = None,
) -> dict[str, str | float | int | bool]:
    """The flat hyperparameters of a run: group choices, the keys in ``KEYS``, every override.
    ``overrides`` and ``choices`` (the chosen option of each group): the run's own; by default Hydra's
    record of the current run."""
    choices = _choices() if choices is None else {k: str(v) for k, v in choices.items() if v is not None}
    params: dict[str, Any] = {}
    for group in GROUPS:
        node = cfg.get(group)
        if group in choices:
            params[group] = choices[group]
        elif isinstance(node, DictConfig) and "_target_" in node:
            params[group] = str(node._target_).rsplit(".", 1)[-1]
    for key in KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None or key == "data.batch_size":  # batch_size null = full batch: worth showing
            params[key] = value
    for override in run_overrides() if overrides is None else overrides:
        key, _, _ = override.partition("=")
        key = key.lstrip("+~")
        if key.startswith(PLACE_KEYS) or key in GROUPS or "/" in key:
            continue
        if key in choices:  # another group's option (callbacks=minimal): its name, not its whole config
            params[key] = choices[key]
            continue
        # the override's text for a key the config lacks (e.g. ~removed) and for the option(s) of another
        # group (logger=[tensorboard,mlflow], scheduler=cosine), not the config they compose
        missing = object()
        value = OmegaConf.select(cfg, key, default=missing)
        typed = value is missing or isinstance(value, DictConfig)
        params[key] = override.partition("=")[2] if typed else value
    if status is not None:
        params["status"] = status
    return {k: _scalar(k, v) for k, v in params.items()}


def trial_id(cfg: DictConfig) -> str:
    """The HParams row's name: what tells the run apart first, then its time (unique per run); see
    :func:`run_name`."""
    return run_name(str(OmegaConf.select(cfg, "paths.output_dir", default=".")))


def run_name(output_dir: str) -> str:
    """A run's name from its directory: what tells it apart first, then its time (the HParams trial ID, and
    the run's name in MLflow and W&B, ``${gdlab_run_name:${paths.output_dir}}`` in conf/logger/).

    ``runs/<time>_model-mlp`` -> ``model-mlp @ <time>`` (``defaults @ <time>`` without overrides);
    ``multirun/<time>/3_optimizer.lr-0.1`` -> ``3_optimizer.lr-0.1 @ <time>``; any other run directory
    -> its name.
    """
    run_dir = Path(output_dir)
    own, sweep = TIME.match(run_dir.name), TIME.match(run_dir.parent.name)
    if own:
        return f"{own.group(2) or 'defaults'} @ {own.group(1)}"
    if sweep and not sweep.group(2):
        return f"{run_dir.name} @ {sweep.group(1)}"
    return run_dir.resolve().name


def shown_keys(params: Mapping[str, Any], overrides: Sequence[str] | None = None) -> list[str]:
    """The columns the dashboard opens on: the run's overrides, the learning rate and the status."""
    keys = [o.partition("=")[0].lstrip("+~") for o in (run_overrides() if overrides is None else overrides)]
    return [k for k in params if k in SHOWN or k in keys]


def log_hparams(
    loggers: Sequence[Logger],
    cfg: DictConfig,
    record: Mapping[str, Any],
    step: int,
    per_step: Collection[str] = (),
    overrides: Sequence[str] | None = None,
    choices: Mapping[str, Any] | None = None,
) -> None:
    """Write this run's HParams entry (TensorBoard) or flat hyperparameters (other loggers).

    ``record`` is the run's metrics.json record; its finite ``train/``, ``val/`` and ``test/`` values are
    the entry's metrics, written where the run's own values are: at ``step`` (the steps taken), the
    ``per_step`` ones (``train/loss``) at the last optimizer step, ``step - 1``. ``overrides`` and
    ``choices``: as :func:`hparams_for` takes them (a job of gdlab.vectorized passes its own).
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    from gdlab.integrations.tensorboard import TensorBoardLogger as GDLabTensorBoardLogger

    params = hparams_for(cfg, status=record.get("status"), overrides=overrides, choices=choices)
    finite = {
        k: v
        for k, v in record.items()
        if k.split("/")[0] in ("train", "val", "test")
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    }
    metrics = {k: finite[k] for k in metric_order(finite)}
    for logger in loggers:
        if isinstance(logger, GDLabTensorBoardLogger):
            logger.log_hparams_entry(
                params,
                metrics,
                step,
                trial_id(cfg),
                record.get("status"),
                shown_keys(params, overrides),
                per_step,
            )
        elif isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=metrics, step=step)
        else:
            logger.log_hyperparams(params)
