"""The training task: run dir -> seed -> build -> fit -> test -> metrics.json and the HParams entry.

:func:`task` is what Hydra runs for each run or sweep job (via :mod:`gdlab.entry`); :func:`train`
trains one run in this process.
"""

from __future__ import annotations

import logging
import math
import signal
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
from gdlab.runs import signals
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
from gdlab.runs.rundir import CONFIG_FILE, check_run_dir, lock_run, run_overrides, save_config, unlock_run
from gdlab.validate import check_group_options, check_places, check_settings

log = logging.getLogger(__name__)

# The files of a run's record: a resume that fails before it trains leaves them byte for byte as they were.
RECORD_FILES = (METRICS_FILE, CONFIG_FILE)


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
        checked(cfg, check_before_launch, cfg)
        record = run_in_child(cfg)
    else:
        record = train(cfg)
    if record.get("status") not in RESULT_STATUSES:
        return None
    value = record.get(cfg.get("optimized_metric"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_before_launch(cfg: DictConfig) -> None:
    """The settings every run has, then the run built once here (without its loggers), before its DDP
    processes start: a bad setting is one line in the time of a single run's, not after every process has
    imported Lightning."""
    check_settings(cfg)
    without_loggers = cfg.copy()
    without_loggers.logger = None
    build(without_loggers)


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
    """Run ``check(*args)`` before the run opens; a refusal (named by its setting) also becomes this new
    run's record, ``failed`` with its config, as a run that failed later would have (a resumed run's record
    is left as it is)."""
    try:
        check(*args)
    except Exception as caught:
        err = blame(cfg, caught)
        output_dir = cfg.paths.get("output_dir")
        if not cfg.get("resume") and output_dir:
            save_config(cfg, Path(output_dir))
            write_metrics(output_dir, {}, status="failed", error=describe(err))
        if err is caught:
            raise
        raise err from caught


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


def start_checkpoint(cfg: DictConfig, module: L.LightningModule, output_dir: Path) -> tuple[str | None, int]:
    """The checkpoint fit() resumes from (``resume`` or ``ckpt_path``) and its optimizer step, checked to
    exist and to fit the model, so a wrong path or a checkpoint of another model is one clear line before
    training."""
    resolved = resolve_ckpt_path(cfg, output_dir)
    if resolved is None:
        return None, 0
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
    saved = ((ckpt.get("hyper_parameters") or {}).get("config") or {}).get("optimizer") or {}
    target, before = cfg.optimizer.get("_target_"), saved.get("_target_") if isinstance(saved, dict) else None
    if before and target and before != target:
        raise ConfigError(
            f"optimizer: {named} was trained with {before}, whose state (e.g. momentum) {target} cannot "
            "continue: resume with the run's own optimizer (leave optimizer unset), or start a new run"
        )
    log.info("resuming from %s", path)
    return str(path), int(ckpt.get("global_step", 0))


def _save_interrupted(trainer: L.Trainer | None) -> None:
    """After Ctrl+C inside fit: write last.ckpt (where the LastCheckpoint callback keeps it)."""
    if trainer is None or not trainer.interrupted:
        return
    if signals.abrupt():
        log.warning(
            "stopped in the middle of step %d: last.ckpt is the last periodic save", trainer.global_step
        )
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
    """Train one run in this process, which owns the run directory meanwhile (its lock file: a second
    process resuming the same run is refused); return the record written to metrics.json."""
    route_lightning_logs()
    output_dir, resume = Path(cfg.paths.output_dir), cfg.get("resume")
    check_run_dir(output_dir, resuming=bool(resume))
    lock = lock_run(output_dir, f"resume={resume}" if resume else f"hydra.run.dir={output_dir}")
    try:
        # A resume that fails (or is stopped) before it trains leaves the run's record as it was.
        kept = {n: (output_dir / n).read_bytes() for n in RECORD_FILES if (output_dir / n).is_file()}
        return _train(cfg, kept if resume else None)
    finally:
        unlock_run(lock)


def _trained(trainer: L.Trainer | None, start_step: int | None) -> bool:
    """Whether this attempt took an optimizer step (a resume that fails while it restores the checkpoint,
    e.g. an optimizer whose state does not fit, took none)."""
    return trainer is not None and start_step is not None and trainer.global_step > start_step


def _restore(output_dir: Path, kept: dict[str, bytes] | None) -> None:
    """Put back the record files of a resumed run as they were before this attempt."""
    for name, data in (kept or {}).items():
        (output_dir / name).write_bytes(data)
    if kept is not None:
        log.info("the run's record in %s is left as it was before this attempt", output_dir)


def _train(cfg: DictConfig, kept: dict[str, bytes] | None) -> dict[str, Any]:
    output_dir, attempts = open_run(cfg)
    metrics: dict[str, Any] = {}
    trainer = None
    start_step: int | None = None  # the step training starts from: an attempt that took none leaves no trace
    ended = "failed"  # how the run ended, for the loggers (until it has a record)
    try:
        datamodule, module, trainer = build(cfg)
        if hasattr(datamodule, "true_params"):
            truth = {k: to_number(v) for k, v in datamodule.true_params().items()}
            log.info("true parameters of the data: %s", rounded(truth))
        ckpt_path, start_step = start_checkpoint(cfg, module, output_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        signals.stop_now()  # a signal in the last step: the run stops here, recorded as interrupted
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
        if kept is not None and not _trained(trainer, start_step):
            _restore(output_dir, kept)
        else:
            _save_interrupted(trainer)
            where = (
                {"epoch": trainer.current_epoch, "step": trainer.global_step} if trainer is not None else {}
            )
            write_metrics(output_dir, metrics, status="interrupted", **where, **attempts)
        if isinstance(stop, SystemExit) and trainer is not None and trainer.interrupted:
            # Lightning turns a stop signal inside fit() into its own shutdown followed by sys.exit(1): the
            # signal again, so that it ends the command as anywhere else (one line, exit status 128 + it).
            raise signals.Interrupted(signals.received() or signal.SIGINT) from None
        raise
    except Exception as caught:
        err = blame(cfg, caught)  # a library's error inside fit that quotes one setting's value names it
        if kept is not None and not _trained(trainer, start_step):
            _restore(output_dir, kept)
            if err is caught:
                raise
            raise err from caught
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
