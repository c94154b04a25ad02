"""The clear-error layer of ``train.py`` and ``eval.py``: any failure becomes one line on stderr and exit 1.

A typo should cost one line that names the setting and the fix, not 60 lines of Hydra, OmegaConf or
Lightning traceback. ``--verbose`` (anywhere on the command line) or ``HYDRA_FULL_ERROR=1`` shows the
full traceback instead.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gdlab.errors import ConfigError

VERBOSE_FLAG = "--verbose"
_HINT = f"  [{VERBOSE_FLAG} or HYDRA_FULL_ERROR=1 for the traceback]"


def _root_cause(err: BaseException) -> BaseException:
    """The first ConfigError in the cause chain, else the innermost cause.

    ``hydra.utils.instantiate`` wraps whatever a constructor raised in ``InstantiationException``; a
    ConfigError raised by our own code is the message meant for the user.
    """
    chain = [err]
    while chain[-1].__cause__ is not None and chain[-1].__cause__ not in chain:
        chain.append(chain[-1].__cause__)
    return next((e for e in chain if isinstance(e, ConfigError)), chain[-1])


def _full_key(err: BaseException) -> str | None:
    """The config key an OmegaConf error is about (``optimizer.lr``), when it says."""
    key = getattr(err, "full_key", None)
    return str(key) if key else None


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def describe(err: BaseException) -> str:
    """One line that says what is wrong and, where we know it, which setting to change and how."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import (
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        if group:
            return f"{group}={option} is not an option: choose one of {', '.join(sorted(err.options))}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the command line: {_first_line(err)}"
    cause = _root_cause(err)
    if isinstance(cause, ConfigError):
        return _first_line(cause)
    if isinstance(cause, MissingMandatoryValue) and _full_key(cause):
        return f"{_full_key(cause)} is required: pass {_full_key(cause)}=<value> on the command line"
    if isinstance(cause, ValidationError):
        key = _full_key(cause)
        msg = _first_line(cause)
        return f"{key}: {msg}: pass a value of the right type" if key else msg
    if isinstance(cause, (ConfigKeyError, AttributeError)) and "not in struct" in str(cause):
        # Hydra's own text names the key and says "To append to your config use +key=value".
        text = str(err) if isinstance(err, ConfigCompositionException) else str(cause)
        lines = [line.strip() for line in text.splitlines() if line.strip() and "full_key" not in line]
        return " ".join(lines[:2]) + " (or fix the spelling of the key)"
    if isinstance(err, ConfigCompositionException | OmegaConfBaseException):
        return " ".join(line.strip() for line in str(err).splitlines()[:2] if line.strip())
    if isinstance(cause, MisconfigurationException):
        msg = _first_line(cause)
        if "accelerator" in msg.lower() or "gpu" in msg.lower():
            return f"trainer: {msg} Use trainer=cpu (or trainer.accelerator=auto) on a machine without it."
        return f"trainer: {msg}"
    if isinstance(cause, OSError) and cause.errno is not None:
        where = cause.filename or "the output directory"
        if cause.errno == errno.ENAMETOOLONG:
            return f"the path {where} is too long for the file system: pass a shorter hydra.run.dir=<dir>"
        if cause.errno == errno.ENOSPC:
            return f"no space left on the disk holding {where}: free space or pass paths.root=<another disk>"
        return (
            f"cannot write {where}: {cause.strerror}: pass a writable paths.root=<dir> "
            "(or fix its permissions)"
        )
    if isinstance(err, InstantiationException) and cause is err:
        return _first_line(err)
    return f"{type(cause).__name__}: {_first_line(cause)}"


_task_errors: list[Exception] = []


def hand_errors_to_cli(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a Hydra task (below ``@hydra.main``): its exception reaches :func:`run_cli` directly.

    Hydra would first print its own "Error executing job with overrides: [...]" line; this keeps the
    failure to our one line. The exception object (and its traceback, for ``--verbose``) is unchanged.
    """

    @functools.wraps(task)
    def wrapper(cfg: Any) -> Any:
        try:
            return task(cfg)
        except Exception as err:
            _task_errors.append(err)
            return None

    return wrapper


def run_cli(entry: Callable[[], Any], rewrite_argv: Callable[[list[str]], list[str]] | None = None) -> Any:
    """Run a ``@hydra.main`` entry point; turn any exception into one stderr line and exit status 1.

    ``rewrite_argv`` (e.g. resume's: restore a run's overrides and directory) runs on the overrides
    before Hydra parses them; its ConfigErrors get the same one-line treatment.
    """
    verbose = VERBOSE_FLAG in sys.argv[1:] or os.environ.get("HYDRA_FULL_ERROR") == "1"
    args = [a for a in sys.argv[1:] if a != VERBOSE_FLAG]
    saved_env = os.environ.get("HYDRA_FULL_ERROR")
    # Ask Hydra to re-raise instead of printing its own multi-line report: this layer prints.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        args = quote_paths(args)
        if rewrite_argv is not None:
            args = rewrite_argv(args)
        sys.argv = [sys.argv[0], *args]
        _task_errors.clear()
        result = entry()
        if _task_errors:
            raise _task_errors.pop()
        return result
    except Exception as err:
        if verbose:
            raise
        print(f"error: {describe(err)}{_HINT}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        # Ctrl+C outside Lightning's fit (which handles its own): metrics.json already says "interrupted".
        if verbose:
            raise
        print("interrupted (Ctrl+C)", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env


# Settings that hold a path. Run directory names list their overrides ("..._model=mlp,optimizer.lr=0.1"),
# and Hydra's override grammar reads "=" and "," in a value as syntax: such values get quoted.
PATH_KEYS = ("ckpt_path", "resume", "predict_input", "paths.root", "paths.data_dir", "hydra.run.dir")


def quote_paths(args: Sequence[str]) -> list[str]:
    """``ckpt_path=runs/x_a=1,b=2/last.ckpt`` -> ``ckpt_path='runs/x_a=1,b=2/last.ckpt'`` (path keys only)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if (
            sep
            and override_key(key) in PATH_KEYS
            and value[:1] not in ("'", '"')
            and any(c in value for c in "=, ")
        ):
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


def override_key(override: str) -> str:
    """The key an override sets: ``+a.b=1`` -> ``a.b``, ``~a`` -> ``a``, ``model=mlp`` -> ``model``."""
    return override.lstrip("+~").split("=", 1)[0]


def drop_overridden(base: Sequence[str], newer: Sequence[str]) -> list[str]:
    """``base`` without the overrides whose key (or a key under it) ``newer`` sets again."""
    keys = {override_key(o) for o in newer}
    return [
        o for o in base if not any(override_key(o) == k or override_key(o).startswith(k + ".") for k in keys)
    ]
