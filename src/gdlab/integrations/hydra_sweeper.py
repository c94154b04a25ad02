"""``hydra/sweeper=gdlab`` (the default): Hydra's basic sweeper, less its second composition of every job.

What it relies on beyond Hydra's documented API, checked by ``tests/test_integrations.py``: the basic
sweeper's class, ``hydra._internal.core_plugins.basic_sweeper.BasicSweeper``, its
``validate_batch_is_legal(batch)``, which composes each job of a batch (about 0.2 s each) before handing
the batch to the launcher, and the ``hydra_context`` its ``setup`` keeps. The vectorized launcher composes
each group's first job and derives the others (checked equal to Hydra's composition): there the check is
skipped. With any other launcher one job of each kind is composed (jobs that differ only in plain values
compose alike), so a sweep that cannot compose still stops before its first job.

Hydra's plugin scan executes every plugin module again, in place, Hydra's own first: a subclass of
``BasicSweeper`` made before the scan no longer matches the class Hydra's code then names. So this module
holds the behaviour (:class:`ComposesEachKindOnce`) and hands out the class as the scan left it
(:func:`basic_sweeper`); the sweeper class is made in ``hydra_plugins.gdlab_plugins``, which the scan runs.

:func:`is_search` tells a grid (the basic sweeper and this one) from a sweeper that searches for the best
value of ``optimized_metric`` (optuna, nevergrad, ax): any sweeper that is not a ``BasicSweeper``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class


def basic_sweeper() -> type:
    """Hydra's ``BasicSweeper`` class as it is now (after Hydra's plugin scan: see the module docstring)."""
    from hydra._internal.core_plugins import basic_sweeper as module

    return module.BasicSweeper


class ComposesEachKindOnce:
    """Mixed into Hydra's ``BasicSweeper``: its check that every job of a batch composes, once per kind."""

    launcher: Any
    hydra_context: Any

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if type(getattr(self, "launcher", None)).__name__ == "VectorizedLauncher":
            return  # it composes every job itself before any of them runs
        # A kind: the job's keys, the type of each value, and the values that choose what is composed
        # (group options such as model=mlp, hydra.* keys, deletions). optimizer.lr=0.01,0.1,... is one kind.
        kinds: dict[tuple, Sequence[str]] = {}
        for overrides in batch:
            kinds.setdefault(self._kind(overrides), overrides)
        super().validate_batch_is_legal(list(kinds.values()))  # type: ignore[misc]

    def _kind(self, overrides: Sequence[str]) -> tuple:
        kind = []
        for override in OverridesParser.create().parse_overrides(list(overrides)):
            key, value = override.key_or_group, override.value()
            chooses = override.is_delete() or key.startswith("hydra") or self._is_group(key)
            kind.append((override.type, key, str(value) if chooses else type(value).__name__))
        return tuple(kind)

    def _is_group(self, key: str) -> bool:
        groups = self.__dict__.setdefault("_groups", {})
        if key not in groups:
            loader = self.hydra_context.config_loader
            groups[key] = bool(loader.get_group_options(key.replace(".", "/")))
        return groups[key]


def is_search(sweeper_target: str | None) -> bool:
    """Whether the sweeper class ``sweeper_target`` searches for the best returned value (any sweeper but
    Hydra's basic one and its subclasses, which run a fixed grid)."""
    if not sweeper_target:
        return False
    try:
        return not issubclass(get_class(sweeper_target), basic_sweeper())
    except Exception:  # a class that cannot be imported ran no sweep either
        return False
