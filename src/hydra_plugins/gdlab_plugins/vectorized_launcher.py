"""``hydra/launcher=vectorized``: a sweep's jobs that differ only in batchable settings (seed, learning
rate, momentum, weight decay) train as one stacked model in this process; each job keeps its own run
directory and record. The work is in :mod:`gdlab.vectorized` (imported only when a sweep launches).

No ``from __future__ import annotations`` here: Hydra executes plugin modules outside ``sys.modules``,
where dataclasses cannot resolve string annotations."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from gdlab.integrations.hydra_sweeper import ComposesEachKindOnce, basic_sweeper


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.gdlab_plugins.vectorized_launcher.VectorizedLauncher"
    # Which jobs of each stacked group draw the pictures callback's figures: first, all, none, or a list
    # of job numbers (e.g. [0,5]). Drawing costs far more than a member's training steps.
    pictures: Any = "first"
    # At most this many jobs in one stacked model (null: a whole group); a larger group trains in pieces.
    max_members: Any = None
    # The memory the stacked model may use, in GiB (null: 90% of what is free on its device).
    max_memory_gb: Any = None


ConfigStore.instance().store(
    group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf, provider="gdlab"
)


@dataclass
class GdlabSweeperConf:
    """``hydra/sweeper=gdlab`` (the default): Hydra's basic sweeper (the same options), composing one job of
    each kind up front, none under this launcher (gdlab.integrations.hydra_sweeper)."""

    _target_: str = "hydra_plugins.gdlab_plugins.vectorized_launcher.GdlabSweeper"
    max_batch_size: Any = None
    params: Any = None


ConfigStore.instance().store(group="hydra/sweeper", name="gdlab", node=GdlabSweeperConf, provider="gdlab")


class GdlabSweeper(ComposesEachKindOnce, basic_sweeper()):  # type: ignore[misc]
    """``hydra/sweeper=gdlab``: Hydra's basic sweeper composing one job of each kind up front
    (:mod:`gdlab.integrations.hydra_sweeper`). Made here, where Hydra's plugin scan runs it."""


class VectorizedLauncher(Launcher):
    """Hydra's launcher interface over :func:`gdlab.vectorized.launch.launch`."""

    def __init__(
        self, pictures: Any = "first", max_members: int | None = None, max_memory_gb: float | None = None
    ) -> None:
        from gdlab.errors import ArgumentError

        if max_members is not None and (
            isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1
        ):
            raise ArgumentError(
                "max_members", f"Invalid max_members: {max_members!r} (must be an integer >= 1, or null)"
            )
        if max_memory_gb is not None and (
            isinstance(max_memory_gb, bool)
            or not isinstance(max_memory_gb, (int, float))
            or max_memory_gb <= 0
        ):
            raise ArgumentError(
                "max_memory_gb", f"Invalid max_memory_gb: {max_memory_gb!r} (must be a number > 0, or null)"
            )
        self.pictures = pictures
        self.max_members = max_members
        self.max_memory_gb = max_memory_gb
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from gdlab.vectorized.launch import launch

        return launch(self, job_overrides, initial_job_idx)
