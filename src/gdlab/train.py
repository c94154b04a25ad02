"""The Hydra task: compose -> seed -> data -> model -> fit -> test -> metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gdlab.checkpoint import LastCheckpoint, check_fits, load_checkpoint, resolve_ckpt_path, resume_argv
from gdlab.checks import check_data_model_loss, check_network_outputs
from gdlab.cli import describe, hand_errors_to_cli, run_cli
from gdlab.config import CONFIG_DIR, print_config, save_config
from gdlab.dashboard import log_hparams
from gdlab.module import GDModule
from gdlab.results import to_number, write_metrics
from gdlab.rundir import check_run_dir
from gdlab.schema import check_ranges
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
    # Without the guard (e.g. callbacks=none) a NaN loss must still not read as a finished run.
    loss = trainer.callback_metrics.get("train/loss")
    if loss is not None and not bool(torch.isfinite(loss).all()):
        return {
            "status": "diverged",
            "step": trainer.global_step,
            "error": f"train/loss = {float(loss)} at the end of training: lower optimizer.lr",
        }
    return {"status": "completed"}


def start_checkpoint(cfg: DictConfig, module: GDModule, output_dir: Path) -> str | None:
    """The checkpoint fit() resumes from (``resume`` or ``ckpt_path``), checked to exist and to fit the
    model, so a wrong path or a checkpoint of another model is one clear line before training."""
    resolved = resolve_ckpt_path(cfg, output_dir)
    if resolved is None:
        return None
    setting, path = resolved
    check_fits(module, load_checkpoint(path, setting), setting, cfg.model.get("_target_", "?"))
    log.info("resuming from %s", path)
    return str(path)


def _save_interrupted(trainer: L.Trainer | None) -> None:
    """After Ctrl+C inside fit: write last.ckpt (where the LastCheckpoint callback keeps it)."""
    if trainer is None or not trainer.interrupted:
        return
    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint):
            callback.save(trainer)
            log.info("interrupted at step %d: saved %s", trainer.global_step, callback.path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; return the record written to metrics.json."""
    _route_lightning_logs_to_hydra()
    output_dir = Path(cfg.paths.output_dir)
    check_run_dir(output_dir, resuming=bool(cfg.get("resume")))
    print_config(cfg)
    save_config(cfg, output_dir)
    log.info("run directory: %s", output_dir.resolve())
    write_metrics(output_dir, {}, status="running")
    metrics: dict[str, Any] = {}
    trainer = None
    try:
        check_ranges(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule, module, trainer = build(cfg)
        if hasattr(datamodule, "true_params"):
            truth = {k: to_number(v) for k, v in datamodule.true_params().items()}
            log.info("true parameters of the data: %s", truth)

        ckpt_path = start_checkpoint(cfg, module, output_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update({k: to_number(v) for k, v in trainer.callback_metrics.items()})
        status = run_status(trainer)
        if status["status"] == "completed":
            # Test the final weights: the point where gradient descent ended, the same as last.ckpt.
            trainer.test(module, datamodule=datamodule, verbose=True)
            metrics.update({k: to_number(v) for k, v in trainer.callback_metrics.items()})
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl+C inside fit() into its own shutdown followed by sys.exit(1).
        _save_interrupted(trainer)
        where = {"epoch": trainer.current_epoch, "step": trainer.global_step} if trainer is not None else {}
        write_metrics(output_dir, metrics, status="interrupted", **where)
        raise
    except Exception as err:
        write_metrics(output_dir, metrics, status="failed", error=describe(err))
        log_hparams(trainer, cfg, {**metrics, "status": "failed"}, best_effort=True)
        raise
    metrics.update({k: v for k, v in status.items() if k != "status"})
    path = write_metrics(output_dir, metrics, status=status["status"])
    log.info("final metrics written to %s (status: %s)", path, status["status"])
    log_hparams(trainer, cfg, {**metrics, "status": status["status"]})  # TensorBoard's HParams tab
    return {**metrics, "status": status["status"]}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@hand_errors_to_cli
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task (one job of a run or sweep); returns ``cfg.optimized_metric``."""
    try:
        metrics = train(cfg)
    except Exception as err:
        if not in_multirun():
            raise
        record_failed_job(err)  # a multirun goes on; SweepSummary sets the exit status at the end
        return None
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if isinstance(value, (int, float)) else None


def main() -> float | None:
    """Entry point of ``python train.py`` and ``gdlab-train``: the Hydra task behind the one-line error
    layer (gdlab.cli), with ``resume=<run dir>|last`` restoring that run's directory and overrides."""
    return run_cli(hydra_main, rewrite_argv=resume_argv)


if __name__ == "__main__":
    main()
