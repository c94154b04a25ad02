"""Start-up checks: data, model and loss that cannot work together fail before any training, in one line.

Nothing here switches on config names. The pieces declare what they accept and the checks compare:
a loss class lists the ``tasks`` it fits (``gdlab.losses``), a model class may require an ``input_ndim``
(the CNN needs (C, H, W)), a datamodule tells its ``task``, ``input_shape`` and ``num_outputs``; the
network's real output shape is measured with one forward pass on two training samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gdlab.config import CONFIG_DIR
from gdlab.errors import ConfigError


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
    except Exception:  # a function target, or a bad path: instantiate reports the latter clearly
        return None
    return obj if isinstance(obj, type) else None


def options(group: str, fits: Any) -> str:
    """The options of ``group`` in conf/ whose class satisfies ``fits(cls)``, as ``group=a|b``."""
    names = []
    for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml")):
        cls = _target_class(OmegaConf.load(path))
        if cls is not None and fits(cls):
            names.append(path.stem)
    return f"{group}={'|'.join(names)}" if names else f"another {group}"


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
