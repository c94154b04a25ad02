"""One stacked group: from its members' configs to each member's record.

:func:`why_not_stacked` says (in words) what in a group's config the stacked model cannot honour; such
a group runs job by job, as the basic launcher runs it. :func:`train_group` builds what ``gdlab.factory``
builds for one run, the network once per member after ``L.seed_everything(seed)`` exactly as a run of
its own, then trains them stacked with one Lightning ``Trainer`` and writes each member's metrics.json,
HParams entry and final log lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from gdlab import validate
from gdlab.callbacks.steplog import StepLog
from gdlab.callbacks.stop import StopAtStepEnd
from gdlab.console import route_lightning_logs
from gdlab.errors import describe
from gdlab.factory import _build_group, at_least_one_batch, building
from gdlab.integrations.tensorboard import TensorBoardLogger
from gdlab.runs.hparams import log_hparams
from gdlab.runs.record import RESULT_STATUSES, write_metrics
from gdlab.train import nonfinite_end, open_run
from gdlab.vectorized.members import Member, MemberCheckpoints, MemberPictures, about
from gdlab.vectorized.memory import check_memory
from gdlab.vectorized.stacked import StackedDataModule, StackedModule

log = logging.getLogger(__name__)

# Callbacks the stacked model honours for every member, by class. Others work on one model only.
MEMBER_AWARE = (
    "gdlab.callbacks.steplog.StepLog",
    "gdlab.callbacks.guard.DivergenceGuard",
    "gdlab.callbacks.diagnostics.GradientDiagnostics",
    "gdlab.callbacks.progress.ProgressBar",
    "lightning.pytorch.callbacks.model_summary.ModelSummary",
    "gdlab.lessons.nonconvex.HessianSpectrum",
    "gdlab.lessons.nonconvex.StationaryStop",
)
# Replaced per member (gdlab.vectorized.members).
PER_MEMBER = (
    "gdlab.runs.checkpoint.LastCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "gdlab.callbacks.pictures.DescentPictures",
)
LOGGERS = ("gdlab.integrations.tensorboard.TensorBoardLogger", "lightning.pytorch.loggers.csv_logs.CSVLogger")
OPTIMIZERS = ("gdlab.optim.PlainSGD", "torch.optim.sgd.SGD")
MODULES = ("gdlab.module.GDModule",)
LOSSES = ("gdlab.losses.MSELoss", "gdlab.losses.CrossEntropyLoss")


def _class_name(node: Any) -> str | None:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not isinstance(target, str):
        return None
    try:
        cls = get_class(target)
    except Exception:
        return None
    return f"{cls.__module__}.{cls.__qualname__}"


def why_not_stacked(cfg: DictConfig, members: int) -> str | None:
    """What in the (unresolved, ``hydra``-free parts of the) config keeps these jobs from training stacked,
    in a few words; None when nothing does."""
    if members < 2:
        return "a single job"
    checks = [
        ("module", MODULES),
        ("optimizer", OPTIMIZERS),
        ("loss", LOSSES),
    ]
    for key, allowed in checks:
        name = _class_name(cfg.get(key))
        if name not in allowed:
            return f"{key}={name or cfg.get(key)} is not one it stacks"
    if cfg.get("scheduler"):
        return "a learning-rate schedule"
    if cfg.optimizer.get("maximize"):
        return "optimizer.maximize"
    for key in ("resume", "ckpt_path"):
        if cfg.get(key):
            return f"{key} (continuing a run)"
    trainer = cfg.trainer
    unstackable = {
        "devices": lambda v: v not in (None, 1, "1"),
        "num_nodes": lambda v: v not in (None, 1),
        "strategy": lambda v: v not in (None, "auto"),
        "accumulate_grad_batches": lambda v: v not in (None, 1),
        "gradient_clip_val": lambda v: v not in (None, 0, 0.0),
        "fast_dev_run": bool,
        "overfit_batches": bool,
    }
    for key, bad in unstackable.items():
        if key in trainer and bad(trainer.get(key)):
            return f"trainer.{key}={trainer.get(key)}"
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and _class_name(node) not in (*MEMBER_AWARE, *PER_MEMBER):
            return f"callbacks.{name} ({_class_name(node) or 'unknown'}) works on one model"
    for name, node in (cfg.get("logger") or {}).items():
        if node is not None and _class_name(node) not in LOGGERS:
            return f"logger.{name} ({_class_name(node) or 'unknown'})"
    return None


class NotStacked(Exception):
    """Found while building: the group runs job by job (the reason is the message)."""


def _nets(cfg: DictConfig, members: Sequence[Member], datamodule: Any) -> list[torch.nn.Module]:
    """Each member's network, built as ``gdlab.factory.build`` builds it: ``L.seed_everything(seed)``, then
    the data (when building it draws from the global generator, it is built again for each member), then
    the network."""
    replay = _data_draws(cfg)
    nets = []
    for member in members:
        L.seed_everything(member.cfg.seed, workers=True, verbose=False)
        data = datamodule
        if replay:
            data = instantiate(member.cfg.data)
            data.setup("fit")
        with building("model", member.cfg.model):
            nets.append(
                instantiate(member.cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
            )
    return nets


def _data_draws(cfg: DictConfig) -> bool:
    """Whether building the data changes torch's global random state (then each member rebuilds it)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    before = torch.get_rng_state()
    instantiate(cfg.data).setup("fit")
    return not torch.equal(before, torch.get_rng_state())


def _rates(cfg: DictConfig, members: Sequence[Member], nets: Sequence[torch.nn.Module]) -> dict[str, Any]:
    """The stacked step's settings: each member's own rates, checked by its own optimizer (a member with
    an invalid rate fails as its own run would, before anything trains)."""
    plain = _class_name(cfg.optimizer) == "gdlab.optim.PlainSGD"
    rates: dict[str, list[float]] = {"lr": [], "momentum": [], "dampening": [], "weight_decay": []}
    for member, net in zip(members, nets, strict=True):
        with building("optimizer", member.cfg.optimizer):
            instantiate(member.cfg.optimizer)(net.parameters())
        for name in rates:
            rates[name].append(float(member.cfg.optimizer.get(name, 0.0) or 0.0))
    return {**rates, "nesterov": bool(cfg.optimizer.get("nesterov", False)), "plain": plain}


def build_group(members: Sequence[Member], max_memory_gb: float | None = None) -> tuple[Any, StackedModule]:
    """The datamodule and the stacked module of the group. Raises :class:`NotStacked` when what was built
    shows the group cannot train stacked, a ConfigError when it cannot train at all."""
    from gdlab.data.base import InMemoryDataModule

    cfg = members[0].cfg
    validate.check_settings(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    with building("data", cfg.data):
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
    if not isinstance(datamodule, InMemoryDataModule):
        raise NotStacked(f"data={type(datamodule).__name__} does not serve its splits from memory")
    validate.check_datamodule(cfg, datamodule)
    validate.check_data_model_loss(cfg, datamodule)
    if datamodule.task == "regression" and datamodule.num_outputs != 1:
        raise NotStacked(f"{datamodule.num_outputs} regression outputs")
    with building("model", cfg.model):
        probe = instantiate(cfg.model, input_shape=datamodule.input_shape, num_outputs=datamodule.num_outputs)
    validate.check_network_outputs(cfg, probe, datamodule)
    check_memory(probe, datamodule, cfg, len(members), max_memory_gb)
    nets = _nets(cfg, members, datamodule)
    with building("loss", cfg.loss):
        loss_fn = instantiate(cfg.loss)
    rates = _rates(cfg, members, nets)
    module = StackedModule(
        nets,
        loss_fn,
        rates,
        instantiate(cfg.optimizer),
        datamodule.task,
        datamodule.num_outputs,
        len(datamodule.input_shape),
        [m.name for m in members],
    )
    return datamodule, module


def _callbacks(members: Sequence[Member], pictures: Sequence[int]) -> list[Any]:
    """The group Trainer's callbacks: the step log with a member dimension, the member-aware ones of the
    config, and per-member checkpoints and pictures."""
    cfg = members[0].cfg
    step_log = StepLog(
        flush_every=cfg.get("log_flush_steps", 50),
        members=len(members),
        member_loggers=[m.loggers for m in members],
    )
    callbacks: list[Any] = [step_log]
    every, last_dirs, best = 0, None, None
    nodes = cfg.get("callbacks") or {}
    for name, node in nodes.items():
        if node is None:
            continue
        kind = _class_name(node)
        if kind in MEMBER_AWARE:
            with building(f"callbacks.{name}", node):
                callbacks.append(instantiate(node))
        elif kind == "gdlab.runs.checkpoint.LastCheckpoint":
            every = int(node.get("every_n_train_steps", 100))
            last_dirs = [Path(m.cfg.callbacks[name].dirpath) for m in members]
        elif kind.endswith("ModelCheckpoint") and node.get("monitor") and node.get("save_top_k", 1) != 0:
            best = {
                "dirs": [
                    Path(str(m.cfg.callbacks[name].dirpath or m.output_dir / "checkpoints")) for m in members
                ],
                "monitor": node.monitor,
                "mode": node.get("mode", "min"),
                "filename": str(node.get("filename") or "{epoch}-{step}"),
            }
        elif kind == "gdlab.callbacks.pictures.DescentPictures":
            for i in pictures:
                with building(f"callbacks.{name}", members[i].cfg.callbacks[name]):
                    own = instantiate(members[i].cfg.callbacks[name])
                callbacks.append(MemberPictures(i, own, members[i].loggers))
    if last_dirs is not None or best is not None:
        callbacks.append(MemberCheckpoints(members, last_dirs, every, best))
    return [*callbacks, StopAtStepEnd()]


def pictures_of(option: Any, members: Sequence[Member]) -> list[int]:
    """Which members draw pictures: ``first`` (the group's first), ``all``, ``none``, or job numbers."""
    if option in (None, "none", False):
        return []
    if option == "first":
        return [0]
    if option == "all":
        return list(range(len(members)))
    wanted = {
        int(n) for n in (option if isinstance(option, Sequence) and not isinstance(option, str) else [option])
    }
    return [i for i, m in enumerate(members) if m.job.idx in wanted]


def train_group(
    members: Sequence[Member], pictures: Any = "first", max_memory_gb: float | None = None
) -> list[dict[str, Any]]:
    """Train the group's members stacked; return each member's record (as written to its metrics.json).

    Raises :class:`NotStacked` before anything is written when the built pieces show it cannot."""
    route_lightning_logs()
    datamodule, module = build_group(members, max_memory_gb)
    started = time.perf_counter()
    opened = []
    for i, member in enumerate(members):
        with about(i):
            opened.append(open_run(member.cfg, member.overrides)[1])
            member.loggers = _build_group(member.cfg, "logger")
    cfg = members[0].cfg
    records: list[dict[str, Any]] = [{} for _ in members]
    trainer = None
    try:
        callbacks = _callbacks(members, pictures_of(pictures, members))
        with building("trainer", cfg.trainer):
            limits = at_least_one_batch(cfg, datamodule)
            trainer = instantiate(
                cfg.trainer, callbacks=callbacks, logger=False, enable_checkpointing=False, **limits
            )
        for member in members:
            for logger in member.loggers:
                logger.log_hyperparams({"task": module.task, "num_outputs": module.num_outputs})
        stacked_data = StackedDataModule(
            datamodule, [int(m.cfg.data.get("shuffle_seed", m.cfg.seed)) for m in members]
        )
        log.info("training %d jobs at once (%s), one stacked model", len(members), _differing(members))
        trainer.fit(module, datamodule=stacked_data)
        statuses = [_outcome(trainer, module, i) for i in range(len(members))]
        results = [i for i, s in enumerate(statuses) if s["status"] in RESULT_STATUSES]
        if results:
            trainer.test(module, datamodule=stacked_data, verbose=False)
            module.write_test(results)
        step_log = StepLog.of(trainer, module)
        for i, member in enumerate(members):
            with about(i):
                records[i] = _finish(member, trainer, module, step_log, i, statuses[i], opened[i])
    except (KeyboardInterrupt, SystemExit):
        for i, member in enumerate(members):
            where = (
                {"epoch": trainer.current_epoch, "step": trainer.global_step} if trainer is not None else {}
            )
            write_metrics(member.output_dir, {}, status="interrupted", **where, **opened[i])
        raise
    except Exception as err:
        for i, member in enumerate(members):
            write_metrics(member.output_dir, {}, status="failed", error=describe(err), **opened[i])
        raise
    finally:
        for member in members:
            for logger in member.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.close()
                else:
                    logger.finalize("success")
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    log.info(
        "%d jobs trained at once in %.2f s: %s",
        len(members),
        time.perf_counter() - started,
        ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
    )
    return records


def _differing(members: Sequence[Member]) -> str:
    """The overrides whose values differ between the members (what the group sweeps)."""
    values: dict[str, set[str]] = {}
    for member in members:
        for override in member.overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return ", ".join(k for k, v in values.items() if len(v) > 1) or "the same settings"


def _outcome(trainer: L.Trainer, module: StackedModule, i: int) -> dict[str, Any]:
    """How member ``i``'s training ended, as :func:`gdlab.train.outcome` says it for a run of its own."""
    for callback in trainer.callbacks:
        diverged = getattr(callback, "member_diverged", None)
        if diverged and diverged[i] is not None:
            return {"status": "diverged", "step": diverged[i].step, "error": diverged[i].error}
    step_log = StepLog.of(trainer, module)
    last = {
        "train/loss": step_log.member_latest[i].get("train/loss"),
        "val/loss": step_log.member_metrics[i].get("val/loss"),
    }
    ended = nonfinite_end(last, module.final_step(i))
    return ended if ended is not None else {"status": "completed"}


def _finish(
    member: Member,
    trainer: L.Trainer,
    module: StackedModule,
    step_log: StepLog,
    i: int,
    status: dict[str, Any],
    attempts: dict[str, Any],
) -> dict[str, Any]:
    """Member ``i``'s record: its epoch values and last per-step ones, where it stopped, its HParams entry."""
    metrics: dict[str, Any] = dict(step_log.member_metrics[i])
    metrics.update(step_log.member_latest[i])
    stopped = module.stopped[i]
    epoch = stopped[0] + 1 if stopped is not None else trainer.current_epoch
    metrics.update(epoch=epoch, step=module.final_step(i))
    metrics.update({k: v for k, v in status.items() if k != "status"})
    record = {**metrics, "status": status["status"]}
    log_hparams(
        member.loggers,
        member.cfg,
        record,
        module.final_step(i),
        per_step=step_log.member_latest[i],
        overrides=member.overrides,
        choices=member.choices,
    )
    path = write_metrics(member.output_dir, metrics, status=status["status"], **attempts)
    log.info("final metrics written to %s (status: %s)", path, status["status"])
    return record


def optimized_value(record: dict[str, Any], cfg: DictConfig) -> float | None:
    """What the job returns to the sweeper, as :func:`gdlab.train.task` returns it."""
    if record.get("status") not in RESULT_STATUSES:
        return None
    value = record.get(cfg.get("optimized_metric"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
