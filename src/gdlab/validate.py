"""The checks that span the config, each failing in one line that names the settings and a fix.

- :func:`check_settings`: the settings every run has (``seed``, ``optimizer.lr``, ``data.batch_size``,
  the Trainer's loop limits, ...) hold values of the right type and range. A component checks its own
  arguments itself (``PlainSGD`` its ``lr``); this covers the keys no single component owns, and the
  types the command line can get wrong before any component sees them.
- :func:`check_data_model_loss`, :func:`check_network_outputs`, :func:`check_world_size`: pieces that
  cannot work together (a loss for classes on regression data, a CNN on feature vectors, a batch that
  does not split over the DDP processes) fail before anything trains.

Nothing here switches on config names. The pieces declare what they accept and the checks compare:
a loss class lists the ``tasks`` it fits (``gdlab.losses``), a model class may require an ``input_ndim``
(the CNN needs (C, H, W)), a datamodule tells its ``task``, ``input_shape`` and ``num_outputs``; the
network's real output shape is measured with one forward pass on two training samples.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import os
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, get_object
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gdlab.conf import CONFIG_PACKAGE
from gdlab.console import PRINT_CONFIG
from gdlab.errors import ConfigError, show, unknown_option

# (type check, what the value must be, an example): the settings every run has.
_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
_OPT_INT = (lambda v: v is None or _INT[0](v), "an integer or null")
_NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
_OPT_TEXT = (lambda v: v is None or isinstance(v, str), "text or null")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
SETTINGS: dict[str, tuple[Any, str, str]] = {
    "seed": (*_INT, "seed=0"),
    "verbose": (*_BOOL, "verbose=true"),
    "log_flush_steps": (*_INT, "log_flush_steps=50"),
    "optimized_metric": (*_OPT_TEXT, "optimized_metric=val/loss"),
    "ckpt_path": (*_OPT_TEXT, "ckpt_path=outputs/runs/<time>/checkpoints/last.ckpt"),
    "print_config": (lambda v: v in PRINT_CONFIG, "one of " + ", ".join(PRINT_CONFIG), "print_config=full"),
    "optimizer.lr": (*_NUMBER, "optimizer.lr=0.1"),
    "data.batch_size": (*_OPT_INT, "data.batch_size=64"),
    "trainer.max_epochs": (*_OPT_INT, "trainer.max_epochs=20"),
    "trainer.min_epochs": (*_OPT_INT, "trainer.min_epochs=1"),
    "trainer.max_steps": (*_INT, "trainer.max_steps=-1"),
    "trainer.log_every_n_steps": (*_OPT_INT, "trainer.log_every_n_steps=1"),
    "trainer.check_val_every_n_epoch": (*_OPT_INT, "trainer.check_val_every_n_epoch=1"),
    "trainer.num_sanity_val_steps": (*_OPT_INT, "trainer.num_sanity_val_steps=0"),
    "trainer.num_nodes": (*_INT, "trainer.num_nodes=1"),
    "trainer.accumulate_grad_batches": (*_INT, "trainer.accumulate_grad_batches=1"),
    "trainer.val_check_interval": (
        lambda v: v is None or _NUMBER[0](v),
        "a number or null",
        "trainer.val_check_interval=0.5",
    ),
    # Lightning's ModelCheckpoint asserts a non-empty monitor deep inside fit
    "callbacks.model_checkpoint.monitor": (
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "a metric name or null",
        "callbacks.model_checkpoint.monitor=val/loss",
    ),
}


# Trainer counts whose out-of-range values Lightning would meet only inside fit (a modulo by zero, ...).
TRAINER_MINIMA = (
    ("log_every_n_steps", 1, 1),
    ("check_val_every_n_epoch", 1, 1),
    ("num_sanity_val_steps", -1, 0),
    ("min_epochs", 0, 1),
    ("num_nodes", 1, 1),
    ("accumulate_grad_batches", 1, 1),
)


# More machines than any cluster has: Lightning would multiply them with trainer.devices and start a run
# whose processes wait for the others (num_nodes=1e15 took a child process and a batch-size message).
MAX_NODES = 100_000
# Lightning's limit_<split>_batches and overfit_batches: a fraction of the split's batches (0.0 to 1.0) or a
# count (an integer); the value to suggest.
LIMITS = {
    "limit_train_batches": "1.0 (all batches)",
    "limit_val_batches": "1.0 (all batches)",
    "limit_test_batches": "1.0 (all batches)",
    "overfit_batches": "0 (off)",
}


# More GPUs or CPU processes than any one machine runs: Lightning would list them all first (a MemoryError
# for trainer.devices=1e15, naming no setting).
MAX_DEVICES = 4096


def check_settings(cfg: DictConfig) -> None:
    """Types of the common settings, then the ranges a type cannot express."""
    missing = object()
    for key, (ok, what, example) in SETTINGS.items():
        value = OmegaConf.select(cfg, key, default=missing)
        if value is not missing and not ok(value):
            raise ConfigError(f"{key}={show(value)} must be {what}: pass e.g. {example}")
    check_finite(cfg)
    check_places(cfg)
    if OmegaConf.select(cfg, "paths.data_dir", default=None) == "":
        raise ConfigError(
            "paths.data_dir is empty: datasets would be looked for (and downloaded) at the file system's "
            "root; pass a directory, e.g. paths.data_dir=data"
        )
    if not 0 <= cfg.get("seed", 0) < 2**32:
        raise ConfigError(
            f"seed={cfg.seed} must be from 0 to {2**32 - 1} (the range numpy seeds with): pass e.g. seed=0"
        )
    devices = OmegaConf.select(cfg, "trainer.devices", default=None)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices < 1 and devices != -1:
        raise ConfigError(
            f"trainer.devices={devices} must be a number of devices >= 1, -1 (all of them) or auto: "
            "pass e.g. trainer.devices=1"
        )
    if isinstance(devices, int) and devices > MAX_DEVICES:
        raise ConfigError(
            f"trainer.devices={devices} is more devices than one machine has (at most {MAX_DEVICES}; it counts "
            "the GPUs, or CPU processes, of one node): pass e.g. trainer.devices=1"
        )
    if cfg.get("log_flush_steps", 1) < 1:
        raise ConfigError(
            f"log_flush_steps={cfg.log_flush_steps} must be >= 1 (how many steps the per-step values wait on "
            "the device before being written; every step is still logged), e.g. log_flush_steps=50"
        )
    trainer = cfg.get("trainer") or {}
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if max_epochs is not None and max_epochs < 1 and not (max_steps and max_steps > 0):
        what = "trains forever" if max_epochs == -1 else "trains nothing"
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} with trainer.max_steps={max_steps} {what}: pass "
            "trainer.max_epochs >= 1 (or -1 with trainer.max_steps > 0)"
        )
    if max_steps is not None and (max_steps < -1 or max_steps == 0):
        raise ConfigError(f"trainer.max_steps={max_steps} must be -1 (no limit) or >= 1")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
        raise ConfigError(
            f"trainer.val_check_interval={interval} must be > 0: batches between validations (an integer) "
            "or a fraction of an epoch (a number up to 1), e.g. trainer.val_check_interval=0.5"
        )
    for key, low, example in TRAINER_MINIMA:
        value = trainer.get(key)
        if value is not None and value < low:
            raise ConfigError(f"trainer.{key}={value} must be >= {low}: pass e.g. trainer.{key}={example}")
    nodes = trainer.get("num_nodes")
    if isinstance(nodes, int) and nodes > MAX_NODES:
        raise ConfigError(
            f"trainer.num_nodes={nodes} is more machines than a cluster has (at most {MAX_NODES:,}): pass the "
            "number of machines the run spans, e.g. trainer.num_nodes=1"
        )
    for key in LIMITS:
        check_limit(key, trainer.get(key))


def check_limit(key: str, value: Any) -> None:
    """``trainer.<key>`` (``limit_train_batches``, the other limits, ``overfit_batches``) is null, a fraction
    from 0.0 to 1.0 or a count of batches; ``limit_train_batches`` takes at least one batch (0 would train
    nothing and record the run ``completed``)."""
    setting = f"trainer.{key}={show(value)}"
    fits = "a fraction of the split from 0.0 to 1.0, a number of batches (an integer >= 0) or null"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{setting} must be {fits}: pass e.g. trainer.{key}={LIMITS[key].split()[0]}")
    if value < 0 or (isinstance(value, float) and value > 1):
        raise ConfigError(f"{setting} must be {fits}: pass e.g. trainer.{key}={LIMITS[key]}")
    if value == 0 and key == "limit_train_batches":
        raise ConfigError(
            f"{setting} trains nothing (0 batches an epoch): pass a number of batches >= 1 or a fraction "
            "above 0, e.g. trainer.limit_train_batches=1.0"
        )


# Settings that say where files go: empty, each would write into the directory the command runs in.
PLACE_KEYS = ("output_dir", "dirpath", "default_root_dir", "save_dir")


def check_places(cfg: DictConfig) -> None:
    """No setting that says where files go is empty (``paths.output_dir=``, ``...model_checkpoint.dirpath=``):
    a run writes only under ``paths.root`` or a directory given by name."""

    def walk(node: Any, prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if isinstance(value, dict):
                walk(value, f"{key}.")
            elif name in PLACE_KEYS and isinstance(value, str) and not value.strip():
                raise ConfigError(
                    f"{key} is empty: the run would write into the directory you run in; pass a directory, "
                    "or leave the setting out (the run directory is the default)"
                )

    container = OmegaConf.to_container(cfg, resolve=False)
    walk({k: v for k, v in container.items() if k != "hydra"}, "")


def check_group_options() -> None:
    """Every group option the command line names exists. Hydra skips a missing option of an ``optional``
    group (``local``; eval.py's ``data`` and ``model``) without a word, and ``+local=foo`` would only add
    a plain key: the run would go on without what was asked for."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        return
    hydra_cfg = HydraConfig.get()
    groups = hydra_cfg.runtime.choices  # every group of the defaults list, optional ones included
    loader = GlobalHydra.instance().config_loader()
    task = list(hydra_cfg.overrides.task)
    for override in OverridesParser.create().parse_overrides(task):
        group, option = override.key_or_group, override.value()
        if override.is_delete() or group not in groups or not isinstance(option, str):
            continue
        options = loader.get_group_options(group)
        if option not in options:  # one of one's own? a hydra.searchpath (a 0.05 s lookup) adds options
            every = [*hydra_cfg.overrides.hydra, *task]
            options = loader.get_group_options(group, config_name=hydra_cfg.job.config_name, overrides=every)
        if option not in options:
            raise ConfigError(unknown_option(group, option, options, typed=override.get_key_element()))


# eval.py's own settings: (type check, what the value must be, an example)
EVAL_SETTINGS: dict[str, tuple[Any, str, str]] = {
    "predict": (*_BOOL, "predict=true"),
    "predict_input": (*_OPT_TEXT, "predict_input=inputs.csv"),
    "predict_batch_size": (
        lambda v: v is None or (_INT[0](v) and v >= 1),
        "an integer >= 1 or null (all at once)",
        "predict_batch_size=1024",
    ),
}


def check_eval_settings(cfg: DictConfig) -> None:
    """eval.py's settings: ``predict=sometimes`` would read as true, ``predict_batch_size=0`` divide by zero."""
    for key, (ok, what, example) in EVAL_SETTINGS.items():
        value = cfg.get(key)
        if not ok(value):
            raise ConfigError(f"{key}={show(value)} must be {what}: pass e.g. {example}")


def check_finite(cfg: DictConfig) -> None:
    """No setting holds nan or inf: a NaN in the data or the model would end as a "diverged" run that
    blames the learning rate."""

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{key}[{i}]")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={show(value)} is not a finite number: pass a finite value")

    walk(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False), "")


def check_argument_types(key: str, node: Any) -> None:
    """The arguments config node ``key`` gives its ``_target_`` have the types its signature declares
    (``n_samples: int``, ``noise_std: float``, ``accelerator: str | Accelerator``): a wrong type stops in one
    line naming the setting, before the component runs into it somewhere inside."""
    if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
        return
    try:
        target = get_object(node._target_)
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
        params = inspect.signature(target).parameters
    except Exception:  # a bad path (building reports it), or hints that only resolve for a type checker
        return
    for name in node:
        name = str(name)
        if name.startswith("_") or name not in hints or name not in params:
            continue
        if OmegaConf.is_missing(node, name):  # ??? in the config: a value only the user can give
            raise ConfigError(f"{key}.{name} is required: pass {key}.{name}=<value> on the command line")
        value = node.get(name)
        if isinstance(value, DictConfig) and "_target_" in value:
            continue  # built by Hydra itself
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        if _fits(value, hints[name]) is False:
            default = params[name].default
            example = (
                f": pass e.g. {key}.{name}={show(default)}" if default is not inspect.Parameter.empty else ""
            )
            raise ConfigError(f"{key}.{name}={show(value)} must be {_describe(hints[name])}{example}")


_PRIMITIVE = (bool, int, float, str, list, dict, type(None))


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` (a plain config value) fits the type ``hint``; None where that cannot be told."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return None
    if origin in (typing.Union, types.UnionType):
        answers = [_fits(value, arg) for arg in args]
        return True if True in answers else (None if None in answers else False)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or hint in (os.PathLike, Path):
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        if len(inner) == 1 and value:
            answers = [_fits(v, inner[0]) for v in value]
            return False if False in answers else (None if None in answers else True)
        return None if inner else True
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and not issubclass(hint, _PRIMITIVE):
        return False if isinstance(value, _PRIMITIVE) else None  # a plain value is no instance of a class
    return None


def _describe(hint: Any) -> str:
    """A type as a user reads it: "an integer or null", "a number", "a list of numbers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if not (isinstance(a, type) and not issubclass(a, _PRIMITIVE))]
        literals = [
            show(v) for a in members if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)
        ]
        parts = ["one of " + ", ".join(dict.fromkeys(literals))] if literals else []
        parts += [_describe(a) for a in members if typing.get_origin(a) is not typing.Literal]
        return " or ".join(dict.fromkeys(p for p in parts if p))
    if origin is typing.Literal:
        return "one of " + ", ".join(show(a) for a in args)
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "text"}
    if hint in names:
        return names[hint]
    if hint in (os.PathLike, Path):
        return "a path"
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"a list of {_plural(_describe(inner[0]))}" if len(inner) == 1 else "a list"
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return "a mapping"
    return ""


def _plural(what: str) -> str:
    return {
        "an integer": "integers",
        "a number": "numbers",
        "text": "texts",
        "true or false": "booleans",
    }.get(what, what)


def choice(cfg: DictConfig, group: str) -> str:
    """How the user picked ``group``, as they would type it: ``loss=cross_entropy``.

    Hydra records the chosen option of each group; a config composed without Hydra's runtime
    (the compose API) falls back to the ``_target_`` that names the class.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        picked = HydraConfig.get().runtime.choices.get(group)
        if picked:
            return f"{group}={picked}"
    return f"{group}._target_={cfg[group].get('_target_')}"


def _target_class(node: Any) -> type | None:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    try:
        obj = get_class(target) if target else None
    except Exception:  # a function target, or a bad path: building reports the latter clearly
        return None
    return obj if isinstance(obj, type) else None


def options(group: str, fits: Any) -> str:
    """gdlab's options of ``group`` whose class satisfies ``fits(cls)``, as ``group=a|b``."""
    names = []
    folder = resources.files(CONFIG_PACKAGE) / group
    for entry in sorted(folder.iterdir(), key=lambda e: e.name) if folder.is_dir() else []:
        if entry.name.endswith(".yaml"):
            cls = _target_class(OmegaConf.create(entry.read_text()))
            if cls is not None and fits(cls):
                names.append(entry.name.removesuffix(".yaml"))
    return f"{group}={'|'.join(names)}" if names else f"another {group}"


CONTRACT_DOC = "docs/extending.md, section 'The datamodule contract'"
TASKS = ("regression", "classification")


def check_datamodule(cfg: DictConfig, datamodule: Any) -> None:
    """What every datamodule must tell the module, checked once here: ``task``, ``input_shape`` (one
    sample's shape) and ``num_outputs``. A datamodule of the user's own that lacks one fails in one line
    naming it and the guide's section (instead of an AttributeError somewhere in the module)."""
    name = f"{choice(cfg, 'data')} ({type(datamodule).__name__})"
    rules = (
        ("task", lambda v: v in TASKS, "one of " + ", ".join(TASKS)),
        (
            "input_shape",
            lambda v: (
                isinstance(v, (tuple, list, torch.Size))
                and len(v) > 0
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v)
            ),
            "one sample's shape as a tuple of positive ints, e.g. (5,) or (1, 28, 28)",
        ),
        (
            "num_outputs",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
            "a positive int (the target width for regression, the class count for classification)",
        ),
    )
    for attr, ok, what in rules:
        try:
            value = getattr(datamodule, attr)
        except AttributeError:
            raise ConfigError(
                f"{name} does not tell the module its {attr} ({what}): see {CONTRACT_DOC}"
            ) from None
        if not ok(value):
            raise ConfigError(f"{name} gives {attr}={value!r}, which must be {what}: see {CONTRACT_DOC}")


def check_data_model_loss(cfg: DictConfig, datamodule: Any) -> None:
    """Before the network is built: the loss fits the task, the model takes the data's input shape."""
    task, input_shape = datamodule.task, tuple(datamodule.input_shape)
    loss_cls = _target_class(cfg.loss)
    tasks = getattr(loss_cls, "tasks", None)
    if tasks is not None and task not in tasks:
        raise ConfigError(
            f"{choice(cfg, 'loss')} needs {' or '.join(tasks)} data but {choice(cfg, 'data')} is {task} data: "
            f"use {options('loss', lambda c: task in getattr(c, 'tasks', ()))}, "
            f"or {options('data', lambda c: getattr(c, 'task', None) in tasks)}"
        )
    model_cls = _target_class(cfg.model)
    ndim = getattr(model_cls, "input_ndim", None)
    if ndim is not None and len(input_shape) != ndim:
        raise ConfigError(
            f"{choice(cfg, 'model')} needs {ndim}-dimensional inputs per sample (images: C, H, W) but "
            f"{choice(cfg, 'data')} gives input_shape={input_shape}: use "
            f"{options('model', lambda c: getattr(c, 'input_ndim', None) in (None, len(input_shape)))}, "
            "or image data"
        )
    wanted = cfg.model.get("num_outputs")
    if wanted is not None and wanted != datamodule.num_outputs:
        raise ConfigError(
            f"model.num_outputs={wanted} cannot match {choice(cfg, 'data')}, which needs {datamodule.num_outputs} "
            "outputs: remove model.num_outputs (the output size comes from the data)"
        )


def check_network_outputs(cfg: DictConfig, net: nn.Module, datamodule: Any) -> None:
    """After the network is built: its output for two training samples has the shape the loss needs.

    Runs in eval mode without gradients, so no random numbers are drawn and no batch-norm
    statistics move: training starts exactly as it would without the check.
    """
    splits = getattr(datamodule, "splits", None)
    if not splits:  # not an in-memory datamodule: nothing to probe with
        return
    x, y = (t[:2] for t in splits["train"])
    x = getattr(datamodule, "inputs", lambda v: v)(x)  # the stored samples as the model sees them
    expected = (len(x), datamodule.num_outputs) if datamodule.task == "classification" else tuple(y.shape)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as err:
        raise ConfigError(
            f"{choice(cfg, 'model')} cannot take inputs of shape {tuple(x.shape)} from {choice(cfg, 'data')} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}): pick a model that fits the data"
        ) from None
    finally:
        net.train(was_training)
    if tuple(out.shape) != expected:
        raise ConfigError(
            f"{choice(cfg, 'model')} outputs shape {tuple(out.shape)} for a batch of {len(x)} but "
            f"{choice(cfg, 'data')} needs {expected} ({datamodule.num_outputs} per sample): "
            "let the model take num_outputs from the data"
        )


def check_world_size(cfg: DictConfig, datamodule: Any, trainer: Any) -> None:
    """DDP: each process takes an equal share of every global batch, so the batch must split evenly."""
    batch_size, world_size = getattr(datamodule, "batch_size", None), trainer.world_size
    if world_size > 1 and batch_size is not None and batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} (the global batch) does not split evenly over the {world_size} "
            f"processes of trainer.devices x trainer.num_nodes: use a multiple of {world_size}"
        )


def check_network_memory(cfg: DictConfig, datamodule: Any, build_network: Any) -> None:
    """Before the network is allocated: ``build_network()`` on torch's meta device (shapes, no memory), and
    the estimate of one training run's memory (``gdlab.vectorized.memory``: weights, gradients, step state,
    a batch's activations) against what is free, so that ``model.hidden_sizes=[100000000]`` is one line
    naming the model's settings instead of an allocator's error after a long wait."""
    from gdlab.vectorized.memory import available_bytes, member_bytes, size

    try:
        with torch.device("meta"):
            net = build_network()
        need = member_bytes(net, datamodule, cfg)
        free, where = available_bytes(cfg)
    except Exception:  # a network that cannot be built without memory, a device that is not there:
        return  # building them for real says what is wrong
    if need <= 0.9 * free:
        return
    params = sum(p.numel() for p in net.parameters())
    node = OmegaConf.to_container(cfg.model, resolve=True)
    settings = ", ".join(f"model.{k}={show(v)}" for k, v in node.items() if not str(k).startswith("_"))
    raise ConfigError(
        f"{choice(cfg, 'model')} ({settings}) needs about {size(need)} to train ({params:,} weights, their "
        f"gradients and step state, a batch's activations), more than the {size(free)} free {where}: "
        "make the network smaller"
    )
