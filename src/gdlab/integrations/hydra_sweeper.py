"""``hydra/sweeper=gdlab``: Hydra's basic sweeper, less its second composition of every job when the
vectorized launcher composes them itself.

What it relies on beyond Hydra's documented API, checked by ``tests/test_integrations.py``: the basic
sweeper's class, ``hydra._internal.core_plugins.basic_sweeper.BasicSweeper``, and its
``validate_batch_is_legal(batch)``, which composes each job of a batch (about 0.2 s each) before handing
the batch to the launcher. The vectorized launcher composes each group's first job and derives the others
(checked equal to Hydra's composition), and a job that does not compose fails there with Hydra's own error,
before any job of the batch runs: the check is the same, once. With any other launcher this sweeper
validates as the basic one does.

:func:`is_search` tells a grid (the basic sweeper and this one) from a sweeper that searches for the best
value of ``optimized_metric`` (optuna, nevergrad, ax): any sweeper that is not a ``BasicSweeper``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.utils import get_class


class GdlabSweeper(BasicSweeper):
    """Hydra's ``BasicSweeper`` (same options: ``max_batch_size``, ``params``); see the module docstring."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if type(getattr(self, "launcher", None)).__name__ == "VectorizedLauncher":
            return  # it composes every job itself before any of them runs
        super().validate_batch_is_legal(batch)


def is_search(sweeper_target: str | None) -> bool:
    """Whether the sweeper class ``sweeper_target`` searches for the best returned value (any sweeper but
    Hydra's basic one and its subclasses, which run a fixed grid)."""
    if not sweeper_target:
        return False
    try:
        return not issubclass(get_class(sweeper_target), BasicSweeper)
    except Exception:  # a class that cannot be imported ran no sweep either
        return False
