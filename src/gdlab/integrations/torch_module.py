"""Plain attributes of a ``torch.nn.Module`` set without torch's registry checks.

``Module.__setattr__`` first asks whether the value is a Parameter, a Module or a buffer, and those
isinstance checks go through Parameter's metaclass (~2 us a call). For a plain value (str, None, a number)
under a name that is no registered parameter, buffer or submodule, it then stores an ordinary attribute.
Lightning sets such values on the LightningModule ~47 times a training step (the name of the hook being
called): measured with callgrind, 12% of the instructions of a small model's step in gdlab's default config.
:class:`FastPlainAttributes` stores those directly. It relies on the registries torch keeps in the
module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``); ``tests/test_integrations.py`` fails
clearly if torch renames them, and without them every value takes torch's own path.
"""

from __future__ import annotations

from typing import Any

from torch import nn

_PLAIN_TYPES = (str, type(None), bool, int, float)


class FastPlainAttributes(nn.Module):
    """A Module mixin: plain values under unregistered names skip ``Module.__setattr__``'s checks."""

    def __setattr__(self, name: str, value: Any) -> None:
        # The registries exist once Module.__init__ has run. The checks are written out: this runs per hook.
        attributes = self.__dict__
        if (
            type(value) in _PLAIN_TYPES
            and "_parameters" in attributes
            and name not in attributes["_parameters"]
            and name not in attributes["_buffers"]
            and name not in attributes["_modules"]
        ):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
