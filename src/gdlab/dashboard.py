"""TensorBoard's HParams tab for gdlab runs: the config values that matter, next to the final metrics.

Lightning logs the module's saved hyperparameters at fit start; with ``default_hp_metric: false`` that
writes only ``hparams.yaml`` (the whole nested config), no HParams entry. At the end of the run
:func:`log_hparams` writes the one entry the tab shows: a flat, short set of keys (the chosen data,
model, loss and optimizer, lr, batch size, seed, epochs, status, and every override of the run). Its
metrics are the run's own scalar tags (``val/loss``, ``test/loss``, ...), whose last values the tab
reads, so no value is written twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Config groups whose chosen option names the run (e.g. data=linear, model=mlp).
GROUPS = ("data", "model", "loss", "optimizer", "trainer")
# Single values worth a column in every run.
KEYS = ("optimizer.lr", "data.batch_size", "seed", "trainer.max_epochs", "data.seed")
PLACE_KEYS = ("paths.", "ckpt_path", "hydra.")


def _choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if v is not None}


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


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
    for override in _overrides():
        key, _, _ = override.partition("=")
        key = key.lstrip("+~")
        if key.startswith(PLACE_KEYS) or key in GROUPS or "/" in key:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        params[key] = value if value is not None else override.partition("=")[2]
    if status is not None:
        params["status"] = status
    return {k: _scalar(v) for k, v in params.items()}


def log_hparams(
    trainer: L.Trainer | None, cfg: DictConfig, record: Mapping[str, Any], best_effort: bool = False
) -> None:
    """Write the HParams entry of this run to every TensorBoard logger (rank zero only).

    ``best_effort``: for a run that already failed; a problem here is logged, not raised over the
    run's own error."""
    if trainer is None or not trainer.is_global_zero:
        return
    try:
        _write_hparams(trainer, cfg, record)
    except Exception as err:
        if not best_effort:
            raise
        log.warning("could not write the TensorBoard HParams entry: %s", err)


def _write_hparams(trainer: L.Trainer, cfg: DictConfig, record: Mapping[str, Any]) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams

    params = hparams_for(cfg, status=record.get("status"))
    _, session_start, session_end = hparams(params, {})
    # No per-run "experiment" summary: TensorBoard would take the first run's as the whole logdir's
    # (its columns only). Without one it builds the table from every run's session start (the union of
    # the hyperparameters) and uses each run's scalar tags (val/loss, test/loss, ...) as the metrics.
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            writer.add_summary(session_start, trainer.global_step)
            writer.add_summary(session_end, trainer.global_step)
            writer.flush()
