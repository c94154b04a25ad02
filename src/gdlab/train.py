"""The Hydra task: compose -> seed -> data -> model -> fit -> test -> metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gdlab.checks import check_data_model_loss, check_network_outputs
from gdlab.config import CONFIG_DIR, print_config, save_config
from gdlab.dashboard import log_hparams
from gdlab.module import GDModule
from gdlab.results import to_number, write_metrics
from gdlab.sweep import in_multirun, record_failed_job

log = logging.getLogger(__name__)


def _route_lightning_logs_to_hydra() -> None:
    # lightning.pytorch adds its own stream handler at import time (before Hydra configures
    # logging) and stops propagation, so its messages would miss the run's log file.
    for name in ("lightning.pytorch", "lightning.fabric"):
        lightning_logger = logging.getLogger(name)
        lightning_logger.handlers.clear()
        lightning_logger.propagate = True


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, GDModule, L.Trainer]:
    """Instantiate datamodule, module and trainer from a composed config (no training)."""
    datamodule = instantiate(cfg.data)
    check_data_model_loss(cfg, datamodule)  # incompatible choices fail here, before anything trains
    net = instantiate(cfg.model, input_shape=datamodule.input_shape, num_outputs=datamodule.num_outputs)
    check_network_outputs(cfg, net, datamodule)
    module = GDModule(
        net=net,
        loss_fn=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        task=datamodule.task,
        num_outputs=datamodule.num_outputs,
        config=OmegaConf.to_container(cfg, resolve=True),
        log_flush_steps=cfg.get("log_flush_steps", 50),
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def run_status(trainer: L.Trainer) -> dict[str, Any]:
    """How training ended. A callback that stops a run early (e.g. a divergence guard) says why by
    setting ``run_status = {"status": "diverged", "step": ..., "error": "..."}``; else ``completed``."""
    for callback in trainer.callbacks:
        status = getattr(callback, "run_status", None)
        if status:
            return dict(status)
    return {"status": "completed"}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; return the record written to metrics.json."""
    _route_lightning_logs_to_hydra()
    output_dir = Path(cfg.paths.output_dir)
    print_config(cfg)
    save_config(cfg, output_dir)
    log.info("run directory: %s", output_dir.resolve())
    write_metrics(output_dir, {}, status="running")
    metrics: dict[str, Any] = {}
    trainer = None
    try:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule, module, trainer = build(cfg)
        if hasattr(datamodule, "true_params"):
            truth = {k: to_number(v) for k, v in datamodule.true_params().items()}
            log.info("true parameters of the data: %s", truth)

        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update({k: to_number(v) for k, v in trainer.callback_metrics.items()})
        status = run_status(trainer)
        if status["status"] == "completed":
            # Test the final weights: the point where gradient descent ended, the same as last.ckpt.
            trainer.test(module, datamodule=datamodule, verbose=True)
            metrics.update({k: to_number(v) for k, v in trainer.callback_metrics.items()})
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
    except KeyboardInterrupt:
        write_metrics(output_dir, metrics, status="interrupted")
        raise
    except Exception as err:
        write_metrics(
            output_dir, metrics, status="failed", error=f"{type(err).__name__}: {err}".splitlines()[0]
        )
        log_hparams(trainer, cfg, {**metrics, "status": "failed"}, best_effort=True)
        raise
    metrics.update({k: v for k, v in status.items() if k != "status"})
    path = write_metrics(output_dir, metrics, status=status["status"])
    log.info("final metrics written to %s (status: %s)", path, status["status"])
    log_hparams(trainer, cfg, {**metrics, "status": status["status"]})  # TensorBoard's HParams tab
    return {**metrics, "status": status["status"]}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``python train.py`` and ``gdlab-train``; returns ``cfg.optimized_metric``."""
    try:
        metrics = train(cfg)
    except Exception as err:
        if not in_multirun():
            raise
        record_failed_job(err)  # a multirun goes on; SweepSummary sets the exit status at the end
        return None
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if isinstance(value, (int, float)) else None


if __name__ == "__main__":
    main()
