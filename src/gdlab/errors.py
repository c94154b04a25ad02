"""Errors a user can fix: raised where the bad value enters, naming the setting and the fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting has a bad value or does not fit the others; the message names it and says how to fix it."""
