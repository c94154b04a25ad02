"""TensorBoard's HParams tab for gdlab runs: the config values that matter, next to the final metrics.

Lightning logs the module's saved hyperparameters at fit start; with ``default_hp_metric: false`` that
writes only ``hparams.yaml`` (the whole nested config), no HParams entry. At the end of the run
:func:`log_hparams` writes the one entry the tab shows, through Lightning's ``log_hyperparams``: a
flat, short set of keys (the chosen data, model, loss and optimizer, lr, batch size, seed, epochs,
status, and every override of the run) and the final ``train/``, ``val/`` and ``test/`` metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from gdlab.runs.rundir import run_overrides

# Config groups whose chosen option names the run (e.g. data=linear, model=mlp).
GROUPS = ("data", "model", "loss", "optimizer", "trainer")
# Single values worth a column in every run.
KEYS = ("optimizer.lr", "data.batch_size", "seed", "trainer.max_epochs", "data.seed")
PLACE_KEYS = ("paths.", "ckpt_path", "resume", "verbose", "print_config", "hydra.")


def _choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if v is not None}


def _scalar(value: Any) -> str | float | int | bool:
    """A value the HParams tab can show: numbers and bools as they are, anything else as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return "null" if value is None else str(value).replace(" ", "")


def hparams_for(cfg: DictConfig, status: str | None = None) -> dict[str, str | float | int | bool]:
    """The flat hyperparameters of a run: group choices, the keys in ``KEYS``, every override."""
    choices = _choices()
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
    for override in run_overrides():
        key, _, _ = override.partition("=")
        key = key.lstrip("+~")
        if key.startswith(PLACE_KEYS) or key in GROUPS or "/" in key:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        params[key] = value if value is not None else override.partition("=")[2]
    if status is not None:
        params["status"] = status
    return {k: _scalar(v) for k, v in params.items()}


def log_hparams(loggers: Sequence[Logger], cfg: DictConfig, record: Mapping[str, Any], step: int) -> None:
    """Write this run's HParams entry (TensorBoard) or flat hyperparameters (other loggers).

    ``record`` is the run's metrics.json record; its finite ``train/``, ``val/`` and ``test/`` values are
    the entry's metrics (written at ``step``, the last optimizer step's, where the run's own values are).
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    params = hparams_for(cfg, status=record.get("status"))
    metrics = {
        k: v
        for k, v in record.items()
        if k.split("/")[0] in ("train", "val", "test")
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    }
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=metrics, step=step)
        else:
            logger.log_hyperparams(params)
