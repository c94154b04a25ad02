"""The training task: run dir -> seed -> build -> fit -> test -> metrics.json and the HParams entry.

:func:`task` is what Hydra runs for each run or sweep job (via :mod:`gdlab.entry`); :func:`train`
trains one run in this process.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig

from gdlab.callbacks.guard import DivergenceGuard
from gdlab.callbacks.steplog import StepLog
from gdlab.console import print_config, rounded, route_lightning_logs
from gdlab.errors import ConfigError, describe
from gdlab.factory import blame, build
from gdlab.runs.checkpoint import LastCheckpoint, check_fits, load_checkpoint, resolve_ckpt_path
from gdlab.runs.hparams import log_hparams
from gdlab.runs.loggers import close_loggers
from gdlab.runs.processes import in_multirun, launches_processes, run_in_child
from gdlab.runs.record import (
    METRICS_FILE,
    RESULT_STATUSES,
    describe_status,
    earlier_attempts,
    read_metrics,
    to_number,
    write_metrics,
)
from gdlab.runs.resume import resumed_config, resuming
from gdlab.runs.rundir import check_run_dir, run_overrides, save_config
from gdlab.validate import check_group_options, check_places, check_settings

log = logging.getLogger(__name__)


def task(cfg: DictConfig) -> float | None:
    """One run or sweep job: resume it if asked, train it here or, when Lightning would start its DDP
    processes, in a child process (:mod:`gdlab.runs.processes`); return ``cfg.optimized_metric``.

    Only a completed run (or one that early stopping ended: a result too) returns its metric: a diverged
    run's last ``val/loss`` may come from before it diverged, so a sweeper (optuna) gets nothing and records
    the trial as failed, never as a good one."""
    checked(cfg, check_group_options)
    checked(cfg, check_places, cfg)
    checked(cfg, check_resume_or_checkpoint, cfg)
    if resuming(cfg.get("resume"), cfg.get("ckpt_path")):
        if in_multirun():
            raise ConfigError("resume continues one run: drop -m/--multirun (or resume each job on its own)")
        cfg = resumed_config(cfg)
        before = read_metrics(cfg.resume) if (Path(cfg.resume) / METRICS_FILE).is_file() else {}
        log.info(
            "continuing %s (it ended: %s)", cfg.resume, describe_status(before) if before else "no record"
        )
    if launches_processes(cfg):
        # the settings every run has, before the run's processes start: a bad one is one line in the time
        # of a single run's, not after a child interpreter has imported Lightning
        checked(cfg, check_settings, cfg)
        record = run_in_child(cfg)
    else:
        record = train(cfg)
    if record.get("status") not in RESULT_STATUSES:
        return None
    value = record.get(cfg.get("optimized_metric"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_resume_or_checkpoint(cfg: DictConfig) -> None:
    """``resume`` continues a run from its own last.ckpt: a ``ckpt_path`` given with it would be dropped."""
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume and ckpt_path:
        raise ConfigError(
            f"resume={resume} continues that run from its own checkpoints/last.ckpt, so ckpt_path={ckpt_path} "
            "would be ignored: drop ckpt_path to continue the run, or drop resume to start a new run from "
            "the checkpoint"
        )


def checked(cfg: DictConfig, check: Any, *args: Any) -> None:
    """Run ``check(*args)`` before the run opens; a refusal also becomes this new run's ``failed`` record
    (a resumed run's record is left as it is)."""
    try:
        check(*args)
    except ConfigError as err:
        output_dir = cfg.paths.get("output_dir")
        if not cfg.get("resume") and output_dir:
            write_metrics(output_dir, {}, status="failed", error=describe(err))
        raise


def step_values(trainer: L.Trainer) -> dict[str, float]:
    """The last value of every per-step scalar the run's step log wrote (``train/loss``, ``diag/*``)."""
    step_log = next((c for c in trainer.callbacks if isinstance(c, StepLog)), None)
    return dict(step_log.latest) if step_log is not None else {}


def outcome(trainer: L.Trainer) -> dict[str, Any]:
    """How training ended: ``{"status": "completed"}``, diverged with the step and one line, or
    ``stopped_early`` with the epoch and the early-stopping callback's ``reason``."""
    for callback in trainer.callbacks:
        if isinstance(callback, DivergenceGuard) and callback.diverged is not None:
            return {"status": "diverged", "step": callback.diverged.step, "error": callback.diverged.error}
    # Without the guard (e.g. callbacks=none), or before it starts checking (its first start_steps), a NaN
    # loss must still not read as a finished run: the last train/loss, and val/loss.
    val = trainer.callback_metrics.get("val/loss")
    last = {
        "train/loss": step_values(trainer).get("train/loss"),
        "val/loss": float(val) if val is not None else None,
    }
    ended = nonfinite_end(last, trainer.global_step)
    if ended is not None:
        return ended
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return {"status": "stopped_early", "reason": early_stopping_reason(callback)}
    return {"status": "completed"}


def nonfinite_end(last: dict[str, float | None], step: int) -> dict[str, Any] | None:
    """``diverged`` when the last ``train/loss`` or ``val/loss`` in ``last`` is not finite, else None."""
    for name, loss in last.items():
        if loss is not None and not math.isfinite(loss):
            return {
                "status": "diverged",
                "step": step,
                "error": f"{name} = {loss} at the end of training: lower optimizer.lr",
            }
    return None


def early_stopping_reason(callback: EarlyStopping) -> str:
    """Why Lightning's EarlyStopping ended the run, in one line (its own message where it keeps one)."""
    message = callback.stopping_reason_message
    epoch = f"after epoch {callback.stopped_epoch + 1}"  # counted from 1, as metrics.json's "epoch"
    if message:
        return f"early stopping {epoch}: {' '.join(str(message).split())}"
    best = callback.best_score
    best_text = f"{float(best):.6g}" if best is not None else "?"
    return (
        f"early stopping {epoch}: {callback.monitor} did not improve by more than {callback.min_delta:g} "
        f"for {callback.wait_count} validations (best {best_text})"
    )


# An older gdlab took several optimizer steps per training_step (manual optimization) and said so here.
OLD_BLOCKS_KEY = "gdlab_steps_per_call"


def start_checkpoint(cfg: DictConfig, module: L.LightningModule, output_dir: Path) -> str | None:
    """The checkpoint fit() resumes from (``resume`` or ``ckpt_path``), checked to exist and to fit the
    model, so a wrong path or a checkpoint of another model is one clear line before training."""
    resolved = resolve_ckpt_path(cfg, output_dir)
    if resolved is None:
        return None
    setting, path = resolved
    named = f"{setting}={cfg.get(setting)}"  # as typed: ckpt_path=<file> or resume=<run dir>
    ckpt = load_checkpoint(path, setting)
    check_fits(module, ckpt, named, cfg.model.get("_target_", "?"))
    if ckpt.get(OLD_BLOCKS_KEY, 1) != 1:
        raise ConfigError(
            f"{named} was written by an older gdlab that took {ckpt[OLD_BLOCKS_KEY]} optimizer steps per "
            "training_step, whose step count this version cannot continue: start a new run (eval.py still "
            "evaluates the checkpoint)"
        )
    log.info("resuming from %s", path)
    return str(path)


def _save_interrupted(trainer: L.Trainer | None) -> None:
    """After Ctrl+C inside fit: write last.ckpt (where the LastCheckpoint callback keeps it)."""
    if trainer is None or not trainer.interrupted:
        return
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        # Lightning's DDP has ended the other ranks after Ctrl+C; the barrier of its save would wait for
        # them. Without the process group its barrier is a no-op and rank 0 writes the checkpoint alone
        # (the weights are the same on every rank).
        torch.distributed.destroy_process_group()
    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint):
            try:
                callback.save(trainer)
            except Exception as err:  # the record of the interruption matters more than this save
                log.warning("interrupted at step %d: could not save last.ckpt (%s)", trainer.global_step, err)
                return
            log.info("interrupted at step %d: saved %s", trainer.global_step, callback.path)


def _metrics(trainer: L.Trainer) -> dict[str, Any]:
    """Epoch metrics (``val/loss``, ``train/mse``, ...) and the last value of every per-step one."""
    values = {k: to_number(v) for k, v in trainer.callback_metrics.items()}
    values.update(step_values(trainer))
    return values


def open_run(cfg: DictConfig, overrides: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Before training: the run directory checked, announced, its config saved and metrics.json saying
    ``running``. Returns the directory and what every later record carries (a resumed run's earlier
    attempts). ``overrides``: the run's own (default: Hydra's record of the current run)."""
    output_dir = Path(cfg.paths.output_dir)
    check_run_dir(output_dir, resuming=bool(cfg.get("resume")))
    log.info("run directory: %s", output_dir.resolve())
    given = run_overrides() if overrides is None else overrides
    print_config(cfg, given, saved_to=save_config(cfg, output_dir).name)
    # A resumed run keeps how each earlier attempt ended; every record written below carries them.
    attempts = {"attempts": earlier_attempts(output_dir)} if cfg.get("resume") else {}
    write_metrics(output_dir, {}, status="running", **attempts)
    return output_dir, attempts


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one run in this process; return the record written to metrics.json."""
    route_lightning_logs()
    output_dir, attempts = open_run(cfg)
    metrics: dict[str, Any] = {}
    trainer = None
    ended = "failed"  # how the run ended, for the loggers (until it has a record)
    try:
        datamodule, module, trainer = build(cfg)
        if hasattr(datamodule, "true_params"):
            truth = {k: to_number(v) for k, v in datamodule.true_params().items()}
            log.info("true parameters of the data: %s", rounded(truth))
        ckpt_path = start_checkpoint(cfg, module, output_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(_metrics(trainer))
        status = outcome(trainer)
        if status["status"] in RESULT_STATUSES and not is_overridden("test_step", module):
            log.info("no test metrics: %s has no test_step", type(module).__name__)
        elif status["status"] in RESULT_STATUSES:
            # Test the final weights: the point where gradient descent ended, the same as last.ckpt.
            trainer.test(module, datamodule=datamodule, verbose=True)
            metrics.update(_metrics(trainer))
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        if trainer.fast_dev_run:
            # one batch of each split checks the path; its numbers are no result (summaries and
            # resume=last leave such runs out)
            metrics["debug"] = "fast_dev_run"
        metrics.update({k: v for k, v in status.items() if k != "status"})
        record = {**metrics, "status": status["status"]}
        # TensorBoard's HParams tab; the flat hyperparameters of the other loggers
        log_hparams(trainer.loggers, cfg, record, trainer.global_step, per_step=step_values(trainer))
        ended = record["status"]
    except (KeyboardInterrupt, SystemExit) as stop:
        _save_interrupted(trainer)
        where = {"epoch": trainer.current_epoch, "step": trainer.global_step} if trainer is not None else {}
        write_metrics(output_dir, metrics, status="interrupted", **where, **attempts)
        if isinstance(stop, SystemExit) and trainer is not None and trainer.interrupted:
            # Lightning turns Ctrl+C inside fit() into its own shutdown followed by sys.exit(1): a Ctrl+C
            # again, so that it ends the command as one anywhere else does (one line, exit status 130).
            raise KeyboardInterrupt from None
        raise
    except Exception as caught:
        err = blame(cfg, caught)  # a library's error inside fit that quotes one setting's value names it
        write_metrics(output_dir, metrics, status="failed", error=describe(err), **attempts)
        if trainer is not None:
            try:
                failed = {**metrics, "status": "failed"}
                log_hparams(trainer.loggers, cfg, failed, trainer.global_step, per_step=step_values(trainer))
            except Exception as hparams_err:  # the run's own error is the one to report
                log.warning("could not write the HParams entry: %s", hparams_err)
        if err is caught:
            raise
        raise err from caught
    finally:
        # MLflow's run marked finished or failed, TensorBoard's event file closed, W&B's run finished
        close_loggers(trainer.loggers if trainer is not None else [], ended)
    path = write_metrics(output_dir, metrics, status=record["status"], **attempts)
    debug = " (fast_dev_run: a check of the path, not a result)" if metrics.get("debug") else ""
    log.info("final metrics written to %s (status: %s)%s", path, record["status"], debug)
    return record
