"""The config schema: types of the settings every run has, checked by Hydra when it composes the config.

``optimizer.lr=abc`` then fails at composition ("could not be converted to Float", naming the key)
instead of deep inside a constructor. The schema sits first in ``conf/train.yaml``'s defaults, so the
YAML files merge onto it. Each node subclasses ``Dict[str, Any]``: keys it does not type stay allowed
(new options keep working without touching this file); the ones it types are converted or refused.
Checks of ranges that a type cannot express (``trainer.max_epochs >= 1``) are in :func:`check_ranges`.
"""

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035 - OmegaConf reads these annotations at runtime

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from gdlab.errors import ConfigError

SCHEMA_NAME = "gdlab_train_schema"

# OmegaConf 2.3 (the line hydra-core 1.3 pins) warns that Dict-subclassing structured configs are
# deprecated; they are the one way it offers to type some keys of a node and leave the rest open.
warnings.filterwarnings("ignore", message=r"Class `\w+Schema` subclasses `Dict`", category=UserWarning)


@dataclass
class DataSchema(Dict[str, Any]):  # noqa: UP006
    """Settings every in-memory datamodule has (``gdlab.data.base.InMemoryDataModule``)."""

    _target_: str = MISSING

    batch_size: Optional[int] = MISSING  # noqa: UP045
    shuffle: bool = True
    shuffle_seed: int = 0
    seed: int = 0


@dataclass
class OptimizerSchema(Dict[str, Any]):  # noqa: UP006
    _target_: str = MISSING
    lr: float = MISSING


@dataclass
class TrainerSchema(Dict[str, Any]):  # noqa: UP006
    """The Trainer settings ``conf/trainer/default.yaml`` sets; defaults are Lightning's own."""

    _target_: str = MISSING

    max_epochs: Optional[int] = None  # noqa: UP045
    min_epochs: Optional[int] = None  # noqa: UP045
    max_steps: int = -1
    log_every_n_steps: Optional[int] = None  # noqa: UP045
    check_val_every_n_epoch: Optional[int] = 1  # noqa: UP045
    num_sanity_val_steps: Optional[int] = None  # noqa: UP045


@dataclass
class TrainSchema(Dict[str, Any]):  # noqa: UP006
    seed: int = 0
    optimized_metric: Optional[str] = None  # noqa: UP045
    ckpt_path: Optional[str] = None  # noqa: UP045
    resume: Optional[str] = None  # noqa: UP045
    data: DataSchema = field(default_factory=DataSchema)
    optimizer: OptimizerSchema = field(default_factory=OptimizerSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)


def register_schemas() -> None:
    """Put the schema in Hydra's ConfigStore (idempotent), where ``conf/train.yaml`` finds it."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=TrainSchema)


def check_ranges(cfg: DictConfig) -> None:
    """Values of the right type that still make no run: one ConfigError naming the setting and the fix."""
    trainer = cfg.get("trainer") or {}
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1 and not (max_steps and max_steps > 0):
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} trains nothing: pass trainer.max_epochs >= 1 "
            "(or -1 with trainer.max_steps > 0)"
        )
    if max_steps is not None and (max_steps < -1 or max_steps == 0):
        raise ConfigError(f"trainer.max_steps={max_steps} must be -1 (no limit) or >= 1")
