"""What keeps each member of a stacked group a job of its own: its run directory (named and recorded as
Hydra's basic launcher does: ``.hydra/``, ``config.yaml``), its log file (the group's lines, less those
about other members), its loggers, its checkpoints in the format of a run of its own, its pictures.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gdlab.vectorized.grouping import Job

# The member a log line is about while the launcher works on one (None: the whole group).
CURRENT = contextvars.ContextVar("gdlab_member", default=None)
MEMBER_ATTR = "gdlab_member"


@dataclass
class Member:
    """One job of a stacked group."""

    job: Job
    output_dir: Path
    cfg: DictConfig  # the job's resolved config (as gdlab.train gets it, resolved)
    loggers: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.output_dir.name

    @property
    def overrides(self) -> list[str]:
        return list(self.job.config.hydra.overrides.task)

    @property
    def choices(self) -> dict[str, Any]:
        return dict(self.job.config.hydra.runtime.choices)


@contextlib.contextmanager
def as_current(job: Job) -> Iterator[None]:
    """Hydra's record of the current run is ``job``'s (as ``run_job`` sets it), then what it was."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(job.config)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = before


def member_of(job: Job) -> Member:
    """The job's run directory (``hydra.sweep.dir``/``hydra.sweep.subdir``, as ``run_job`` names it, set as
    ``hydra.runtime.output_dir``) and its resolved config. Nothing is written."""
    cfg = job.config
    with as_current(job):
        output_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(output_dir.absolute())
    with as_current(job):
        task = copy.deepcopy(cfg)
        with read_write(task), open_dict(task):
            del task["hydra"]
        resolved = OmegaConf.create(OmegaConf.to_container(task, resolve=True))
    return Member(job, output_dir.absolute(), resolved)


def write_hydra_record(member: Member) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as ``hydra.core.utils.run_job`` writes them."""
    cfg = member.job.config
    if cfg.hydra.output_subdir is None:
        return
    folder = member.output_dir / str(cfg.hydra.output_subdir)
    folder.mkdir(parents=True, exist_ok=True)
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    with as_current(member.job):
        hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    for name, node in (
        ("config.yaml", task),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", cfg.hydra.overrides.task),
    ):
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


class _MemberFile(logging.Filter):
    """A member's log file: the group's lines and its own, not those about other members."""

    def __init__(self, member: int) -> None:
        super().__init__()
        self.member = member

    def filter(self, record: logging.LogRecord) -> bool:
        about = getattr(record, MEMBER_ATTR, CURRENT.get())
        return about is None or about == self.member


class _Console(logging.Filter):
    """The console: the group's lines, and a member's warnings (its own lines are in its log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        about = getattr(record, MEMBER_ATTR, CURRENT.get())
        return about is None or record.levelno >= logging.WARNING


@contextlib.contextmanager
def group_logging(members: Sequence[Member]) -> Iterator[None]:
    """Hydra's job logging of the first member (as ``run_job`` configures it), and the same file handler
    for every other member in its own directory; lines about one member reach only its file."""
    first = members[0].job.config
    with as_current(members[0].job):
        configure_log(first.hydra.job_logging, first.hydra.verbose)
    root = logging.getLogger()
    added: list[logging.Handler] = []
    filters: list[tuple[logging.Handler, logging.Filter]] = []
    first_dir = os.path.realpath(members[0].output_dir)
    for handler in list(root.handlers):
        path = getattr(handler, "baseFilename", None)
        if path is None or os.path.dirname(os.path.realpath(path)) != first_dir:
            if isinstance(handler, logging.StreamHandler) and path is None:
                console = _Console()
                handler.addFilter(console)
                filters.append((handler, console))
            continue
        own = _MemberFile(0)
        handler.addFilter(own)
        filters.append((handler, own))
        for i, member in enumerate(members[1:], start=1):
            twin = logging.FileHandler(member.output_dir / os.path.basename(path), encoding="utf-8")
            twin.setLevel(handler.level)
            twin.setFormatter(handler.formatter)
            twin.addFilter(_MemberFile(i))
            root.addHandler(twin)
            added.append(twin)
    try:
        yield
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        for handler, own in filters:
            handler.removeFilter(own)


@contextlib.contextmanager
def about(member: int) -> Iterator[None]:
    """Log lines inside are about member ``member`` (its log file only, warnings on the console too)."""
    token = CURRENT.set(member)
    try:
        yield
    finally:
        CURRENT.reset(token)


def member_checkpoint(module: Any, trainer: L.Trainer, member: int, config: dict[str, Any]) -> dict[str, Any]:
    """Member ``member``'s checkpoint in the format of a run of its own: ``eval.py`` loads it as a single
    :class:`gdlab.module.GDModule` (weights, its step rule's state, ``config``: its resolved config)."""
    checkpoint: dict[str, Any] = {
        "epoch": module.stopped[member][0] if module.stopped[member] else trainer.current_epoch,
        "global_step": module.final_step(member),
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.member_state_dict(member),
        "optimizer_states": [module.member_optimizer_state(member)],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "task": module.task,
            "num_outputs": module.num_outputs,
            "config": config,
        },
    }
    datamodule = getattr(trainer.datamodule, "inner", None)
    state = datamodule.state_dict() if datamodule is not None else None
    if state:
        checkpoint[type(datamodule).__qualname__] = state
    return checkpoint


def save_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


class MemberCheckpoints(L.Callback):
    """Each member's ``last.ckpt``, every ``every_n_train_steps`` steps and at the end (as
    :class:`gdlab.runs.checkpoint.LastCheckpoint`, less its saves at every epoch's end: a full-batch epoch
    is one step, and a stacked job is not resumed), and, with ``monitor``, its best one (as Lightning's
    ``ModelCheckpoint`` with ``save_top_k: 1``).

    Args:
        members: the group's members (their configs and directories).
        last_dirs: each member's ``last.ckpt`` directory (None: no last.ckpt).
        every_n_train_steps: as LastCheckpoint's.
        best: ``{"dirs": [...], "monitor": ..., "mode": ..., "filename": ...}`` or None.
    """

    def __init__(
        self,
        members: Sequence[Member],
        last_dirs: Sequence[Path] | None,
        every_n_train_steps: int,
        best: dict[str, Any] | None,
    ) -> None:
        self.members = list(members)
        self.last_dirs = last_dirs
        self.every = every_n_train_steps
        self.best = best
        self._multiple = 0
        self._saved: list[int] = [-1] * len(members)
        self._best: list[tuple[float, Path] | None] = [None] * len(members)
        self._configs = [OmegaConf.to_container(m.cfg, resolve=True) for m in self.members]

    def _save_last(self, trainer: L.Trainer, module: Any) -> None:
        if self.last_dirs is None or trainer.sanity_checking:
            return
        for i in range(len(self.members)):
            step = module.final_step(i)
            if self._saved[i] == step:
                continue
            checkpoint = member_checkpoint(module, trainer, i, self._configs[i])
            save_atomically(checkpoint, self.last_dirs[i] / "last.ckpt")
            self._saved[i] = step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._multiple = trainer.global_step // self.every if self.every else 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.every and trainer.global_step // self.every > self._multiple:
            self._multiple = trainer.global_step // self.every
            self._save_last(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best is None or trainer.sanity_checking:
            return
        from gdlab.callbacks.steplog import StepLog

        metrics = StepLog.of(trainer, self).member_metrics
        sign = 1.0 if self.best["mode"] == "min" else -1.0
        for i in range(len(self.members)):
            value = metrics[i].get(self.best["monitor"])
            if value is None or value != value or not pl_module.is_active(i):
                continue
            previous = self._best[i]
            if previous is not None and sign * value >= sign * previous[0]:
                continue
            name = self.best["filename"].format(epoch=trainer.current_epoch, step=trainer.global_step)
            path = Path(self.best["dirs"][i]) / f"{name}.ckpt"
            save_atomically(member_checkpoint(pl_module, trainer, i, self._configs[i]), path)
            if previous is not None and previous[1] != path:
                previous[1].unlink(missing_ok=True)
            self._best[i] = (value, path)


class MemberPictures(L.Callback):
    """The pictures (:class:`gdlab.callbacks.DescentPictures`) of one member, drawn from its live view,
    into its own loggers and plots directory."""

    def __init__(self, member: int, pictures: Any, loggers: Sequence[Any]) -> None:
        self.member = member
        self.pictures = pictures
        self.loggers = list(loggers)
        self._hook: Any = None

    def _as_run(self, trainer: L.Trainer, module: Any) -> tuple[Any, Any]:
        """(the Trainer as this member's own run would show it, the member's module)."""
        i = self.member
        run = SimpleNamespace(
            datamodule=trainer.datamodule,
            optimizers=[module.member_optimizer(i)],
            loggers=self.loggers,
            global_step=module.final_step(i),
            current_epoch=trainer.current_epoch,
            is_global_zero=True,
        )
        return run, module.member_view(i)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pictures.on_fit_start(*self._as_run(trainer, pl_module))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def after_step(*args: Any) -> None:
            if pl_module.is_active(self.member):
                self.pictures._after_step(*args)  # the descent path grows with each of its steps

        self._hook = trainer.optimizers[0].register_step_post_hook(after_step)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.is_active(self.member) or pl_module.stopped[self.member][0] == trainer.current_epoch:
            with about(self.member):
                self.pictures.on_train_epoch_end(*self._as_run(trainer, pl_module))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with about(self.member):
            self.pictures.on_fit_end(*self._as_run(trainer, pl_module))
