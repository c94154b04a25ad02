"""Checkpoints: ``last.ckpt`` written so a killed run can resume, and the checkpoint a run starts from
(``ckpt_path=<file>``, ``resume=<run dir>|last``) checked up front.

Every check raises a ConfigError naming the setting and the fix, before anything trains: a missing
file, a file that is not a checkpoint, a checkpoint whose weights do not fit the configured model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from gdlab.errors import ArgumentError, ConfigError
from gdlab.integrations.lightning import resumed_this_epoch
from gdlab.runs.resume import LAST_CKPT

log = logging.getLogger(__name__)


def plateau_values(trainer: L.Trainer) -> dict[str, float]:
    """The monitored values the epoch-interval ``ReduceLROnPlateau`` schedulers step with at the end of this
    epoch, by monitor key (those Lightning would step now; none when the epoch logged no value)."""
    values = {}
    for config in trainer.lr_scheduler_configs:
        if not config.reduce_on_plateau or config.interval != "epoch" or not config.monitor:
            continue
        value = trainer.callback_metrics.get(config.monitor)
        if value is not None and (trainer.current_epoch + 1) % config.frequency == 0:
            values[config.monitor] = float(value)
    return values


def step_plateau_schedulers(
    trainer: L.Trainer, pl_module: L.LightningModule, values: dict[str, float]
) -> None:
    """Step the epoch-interval ``ReduceLROnPlateau`` schedulers with ``values`` (by monitor key), through the
    module's public ``lr_scheduler_step`` hook, as Lightning does at the end of an epoch."""
    if not pl_module.automatic_optimization:
        return
    for config in trainer.lr_scheduler_configs:
        if config.reduce_on_plateau and config.interval == "epoch" and config.monitor in values:
            pl_module.lr_scheduler_step(config.scheduler, torch.tensor(values[config.monitor]))


class LastCheckpoint(Checkpoint):
    """Keep ``<dirpath>/last.ckpt`` the newest full training state: every ``every_n_train_steps``
    optimizer steps, at each epoch end (after validation) and when training ends.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` only rewrites last.ckpt when it also saves a
    top-k checkpoint, so after an epoch without a better ``val/loss`` last.ckpt is not the final state.
    The file is written to a temporary name and renamed: a process killed mid-write leaves the previous
    last.ckpt intact, never a truncated one.

    ``ReduceLROnPlateau`` resumes bitwise too. Lightning 2.6 steps it after ``on_train_epoch_end`` (after
    the epoch's save) and not at the end of the epoch a run resumes in; so an epoch-end last.ckpt carries
    the values that step needs, and the resumed run takes the step when it starts, and the end of a resumed
    epoch steps it as every other epoch's end does.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 100) -> None:
        if (
            isinstance(every_n_train_steps, bool)
            or not isinstance(every_n_train_steps, int)
            or every_n_train_steps < 0
        ):
            raise ArgumentError(
                "every_n_train_steps",
                f"Invalid every_n_train_steps: {every_n_train_steps!r} (must be an integer >= 0; 0: only at epoch ends)",
            )
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self._saved_step = -1
        self._multiple = 0  # the last multiple of every_n_train_steps saved at
        self._plateau: dict[str, float] = {}  # saved with an epoch-end save: the plateau step still to come
        self._plateau_to_step: dict[str, float] = {}  # loaded: the step the checkpoint's run had not taken

    @property
    def path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def save(self, trainer: L.Trainer, again: bool = False) -> None:
        """Write last.ckpt now (all ranks call it; rank 0 writes); once per optimizer step unless ``again``."""
        if (
            trainer.fast_dev_run
            or trainer.sanity_checking
            or (self._saved_step == trainer.global_step and not again)
        ):
            return
        tmp = self.dirpath / ".last.ckpt.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._saved_step = trainer.global_step

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_step_pending": dict(self._plateau)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._plateau_to_step = dict(state_dict.get("plateau_step_pending", {}))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._multiple = trainer.global_step // self.every_n_train_steps if self.every_n_train_steps else 0
        if self._plateau_to_step:  # resumed from an epoch-end save: the epoch's plateau step, now
            step_plateau_schedulers(trainer, pl_module, self._plateau_to_step)
            self._plateau_to_step = {}

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step // n > self._multiple:
            self._multiple = trainer.global_step // n
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The hook Lightning's fit loop expects epoch checkpoints in (the epoch counts as processed, its
        # validation has run): a resume starts the next epoch. It replaces a step save of the same step,
        # taken before validation. (A save at on_validation_end resumes into an empty epoch remainder.)
        values = plateau_values(trainer)
        self._plateau = values  # Lightning's plateau step comes after this save: the resumed run takes it
        try:
            self.save(trainer, again=True)
        finally:
            self._plateau = {}
        if resumed_this_epoch(trainer):  # Lightning skips the plateau step of the epoch a run resumed in
            step_plateau_schedulers(trainer, pl_module, values)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """A resumed run trains with the configured optimizer settings, not the checkpoint's: torch's
        ``load_state_dict`` would bring back each group's ``lr`` (and the rest) with the optimizer's state,
        so ``resume=<run> optimizer.lr=0.5`` would silently go on at the old rate while ``config.yaml``
        says 0.5. (Lightning calls this before it restores the optimizer from ``checkpoint``.)

        Under a schedule the group's ``lr`` is the schedule's current value, part of the state the run
        resumes bitwise: it comes from the checkpoint (with the schedule's own state); a changed
        ``optimizer.lr`` is reported, not applied halfway through a schedule."""
        states = checkpoint.get("optimizer_states") or []
        configured = pl_module.configure_optimizers()
        scheduled = bool(checkpoint.get("lr_schedulers")) or isinstance(configured, Mapping)
        optimizer = configured["optimizer"] if isinstance(configured, Mapping) else configured
        if len(states) != 1 or not isinstance(optimizer, torch.optim.Optimizer):
            return
        for group, saved in zip(optimizer.param_groups, states[0].get("param_groups", []), strict=False):
            for name, value in group.items():
                if scheduled and name in ("lr", "initial_lr"):
                    if name == "initial_lr":
                        continue
                    value = group.get("initial_lr", value)  # the schedule's base rate, as configured
                    base = saved.get("initial_lr", value)
                    if base != value:
                        log.warning(
                            "optimizer.lr: %s in the checkpoint's schedule, %s in the config: the schedule "
                            "resumes from the checkpoint (start a new run to change its base rate)",
                            base,
                            value,
                        )
                    continue
                if name != "params" and name in saved and saved[name] != value:
                    log.info(
                        "optimizer %s: %s in the checkpoint, %s from the config (used)",
                        name,
                        saved[name],
                        value,
                    )
                    saved[name] = value


def load_checkpoint(path: str | os.PathLike, setting: str = "ckpt_path") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``, with one clear line for a missing or unreadable file."""
    path = Path(path)
    if path.is_dir():
        inside = next(
            (p for p in (path / "checkpoints" / "last.ckpt", path / "last.ckpt") if p.is_file()), None
        )
        example = inside or path / "checkpoints" / "last.ckpt"
        raise ConfigError(f"{setting}={path} is a directory: pass the .ckpt file, e.g. {setting}={example}")
    if not path.is_file():
        hint = "pass an existing .ckpt file, e.g. outputs/runs/<time>/checkpoints/last.ckpt"
        raise ConfigError(f"{setting}={path} does not exist: {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"{setting}={path} is not a readable checkpoint ({type(err).__name__}): "
            "it may be truncated or not a Lightning .ckpt; pass another file"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{setting}={path} has no state_dict: pass a Lightning checkpoint (.ckpt) of gdlab")
    return ckpt


def checkpoint_model(ckpt: dict[str, Any]) -> str:
    """The model ``_target_`` the checkpoint was trained with (from its saved run config), if known."""
    config = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    return str((config.get("model") or {}).get("_target_", "an unknown model"))


def check_fits(module: torch.nn.Module, ckpt: dict[str, Any], setting: str, model_target: str) -> None:
    """Raise a ConfigError unless the checkpoint's weights have exactly the module's names and shapes."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if want == have:
        return
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = [f"{k} {have[k]} vs {want[k]}" for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    detail = "; ".join(
        part
        for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"shape {', '.join(shapes[:3])}" if shapes else "",
        )
        if part
    )
    raise ConfigError(
        f"{setting} holds weights of {checkpoint_model(ckpt)} that do not fit model={model_target} "
        f"with this data ({detail}): use the model and data the checkpoint was trained with"
    )


def resolve_ckpt_path(cfg: Any, output_dir: Path) -> tuple[str, Path] | None:
    """``(setting, checkpoint file)`` this run starts from: ``resume`` -> its last.ckpt, else ``ckpt_path``."""
    if cfg.get("resume"):
        return "resume", output_dir / LAST_CKPT
    ckpt_path = cfg.get("ckpt_path")
    return ("ckpt_path", Path(ckpt_path)) if ckpt_path else None
