"""The default (non-)profiler: records nothing and, unlike Lightning's, costs nothing per hook call."""

from __future__ import annotations

import contextlib
from typing import Any

from lightning.pytorch.profilers import PassThroughProfiler


class NoProfiler(PassThroughProfiler):
    """Lightning wraps every hook call in ``trainer.profiler.profile(name)``, about 120 times a training
    step. Its default ``PassThroughProfiler`` does nothing through a generator-based context manager
    (~1.5 us a call, ~0.1-0.2 ms a step); this one hands back one shared ``nullcontext`` (~0.3 us).
    ``debug=profiler`` (or ``trainer.profiler=simple``) swaps in a real profiler."""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager[Any]:  # type: ignore[override]
        return self._nothing
