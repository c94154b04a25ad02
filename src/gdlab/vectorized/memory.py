"""Will M members fit? An estimate made before anything of the group is allocated.

Per member: its weights, their gradient, the step's state and temporaries, the copies the per-step
diagnostics keep until they are written, the activations of one batch (measured on one network with
forward hooks), and its own batch when the members read in different orders.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from omegaconf import DictConfig

from gdlab.errors import ConfigError

# Copies of the weights alive per member: weights, gradient, momentum, two step temporaries, the
# networks built one by one before they are stacked, and their stacked copy.
WEIGHT_COPIES = 8
# Activations: the forward's outputs kept for the backward, their gradients, and the vmap's temporaries.
ACTIVATION_COPIES = 3
GIB = 2**30


class MemoryShortage(ConfigError):
    """The group would not fit: the sweep stops before anything is allocated (one line)."""


def available_bytes(cfg: DictConfig) -> tuple[int, str]:
    """Free memory where the group trains: the GPU's (``torch.cuda.mem_get_info``) or the machine's
    (``MemAvailable`` of /proc/meminfo, else the physical pages)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        free, _ = torch.cuda.mem_get_info()
        return int(free), "on the GPU"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "in memory"
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "in memory"


def member_bytes(net: torch.nn.Module, datamodule: Any, cfg: DictConfig) -> int:
    """The estimate of one member's memory (see the module docstring)."""
    size = 8 if "64" in str(cfg.trainer.get("precision", "32")) else 4
    params = sum(p.numel() for p in net.parameters())
    total = params * size * WEIGHT_COPIES
    callbacks = cfg.get("callbacks") or {}
    if any(
        node is not None and "GradientDiagnostics" in str(node.get("_target_", ""))
        for node in callbacks.values()
    ):
        total += 3 * min(params, 4096) * 8 * (int(cfg.get("log_flush_steps", 50)) + 1)
    x, _ = datamodule.splits["train"]
    batch = min(datamodule.batch_size or len(x), len(x))
    sample = math.prod(datamodule.inputs(x[:1]).shape[1:])
    outputs: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel())) for m in net.modules()]
    device = next((p.device for p in net.parameters()), torch.device("cpu"))  # "meta": shapes only
    try:
        with torch.no_grad():
            net(datamodule.inputs(x[:1]).float().to(device))
    finally:
        for hook in hooks:
            hook.remove()
    total += sum(outputs) * batch * size * ACTIVATION_COPIES
    total += 2 * batch * sample * size  # its own batch of inputs (and their gather)
    return total


def check_memory(
    net: torch.nn.Module, datamodule: Any, cfg: DictConfig, members: int, limit_gb: float | None
) -> None:
    """Raise a ConfigError, in one line saying how much is needed and how much there is, when ``members``
    copies of ``net`` would not fit (in ``limit_gb`` GiB when given, else in 90% of what is free)."""
    need = member_bytes(net, datamodule, cfg)
    free, where = available_bytes(cfg)
    have = int(limit_gb * GIB) if limit_gb is not None else int(0.9 * free)
    if need * members <= have:
        return
    fit = max(have // need, 1)
    source = (
        f"hydra.launcher.max_memory_gb={limit_gb}"
        if limit_gb is not None
        else f"90% of {size(free)} free {where}"
    )
    raise MemoryShortage(
        f"hydra/launcher=vectorized: {members} jobs of this model trained at once need about "
        f"{size(need * members)} ({size(need)} each: weights, gradients, step state, activations of a batch), "
        f"{size(have)} is there ({source}): train at most {fit} at once with hydra.launcher.max_members={fit}"
    )


def size(n: float) -> str:
    """Bytes as a person reads them: 512 KiB, 3.2 MiB, 41.0 GiB."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"
