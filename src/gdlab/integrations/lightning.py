"""What gdlab reads of Lightning beyond its documented API.

``trainer.fit_loop.restarting`` (no underscore, but undocumented): True through the epoch a run resumed in
from a checkpoint taken mid-epoch. gdlab's checkpoint callback needs it because Lightning skips that epoch's
``ReduceLROnPlateau`` step, which a resume must take to stay bitwise. ``tests/test_integrations.py``
checks that the attribute is still there and still means this.
"""

from __future__ import annotations

import lightning as L


def resumed_this_epoch(trainer: L.Trainer) -> bool:
    """True in the epoch a run resumed in from a mid-epoch checkpoint, until that epoch ends."""
    return bool(trainer.fit_loop.restarting)
