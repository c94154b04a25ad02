"""Errors a user can fix, and the one line each of them becomes on the command line.

- A component (optimizer, datamodule, model, callback) checks its own arguments and raises
  :class:`ArgumentError`, a ``ValueError`` that names the argument by the component's own name:
  ``PlainSGD(lr=-1)`` -> "Invalid learning rate: -1 (must be finite and > 0)"
  (:class:`ArgumentTypeError`, a ``TypeError``, for a value of the wrong type).
- :func:`gdlab.factory.build` knows which config node it is building; whatever that component raises
  becomes a :class:`SettingError` naming the setting: "optimizer.lr=-1: Invalid learning rate: ...".
- :class:`ConfigError` comes from the checks that span the config (``gdlab.validate``, run directories,
  checkpoints, resume); their messages name the settings themselves. :class:`RunError` says why a run
  could not finish when no setting is to blame.
- :func:`describe` turns any exception into the one line ``train.py`` and ``eval.py`` print.

Importing this module costs nothing: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import errno
import json
import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

VERBOSE_HINT = "  [verbose=true for the traceback]"


def exit_with(message: str, hint: bool = True) -> NoReturn:
    """End the command with exit status 1 and its one line on stderr: ``error: <message>`` (and, where
    a traceback exists, how to see it)."""
    print(f"error: {message}{VERBOSE_HINT if hint else ''}", file=sys.stderr)
    raise SystemExit(1)


class ConfigError(ValueError):
    """A setting has a bad value or does not fit the others; the message names it and says how to fix it."""


class RunError(RuntimeError):
    """A run could not finish for a reason its message states in full (e.g. its processes were killed)."""


class ArgumentError(ValueError):
    """A component's argument is invalid. ``argument`` is the component's own name for it (``lr``), so the
    component stays reusable under any config key; the message says what is wrong in torch's manner."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class ArgumentTypeError(TypeError):
    """A component's argument has the wrong type; ``argument`` as in :class:`ArgumentError`."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class SettingError(ConfigError):
    """An error raised while building the component of config node ``key``, as one line naming the setting:
    ``<key>.<argument>=<value>: <message>`` for an :class:`ArgumentError`, ``<key>: <message>`` otherwise."""

    def __init__(self, key: str, node: Mapping[str, Any] | None, cause: BaseException) -> None:
        self.key, self.cause = key, cause
        super().__init__(_setting_line(key, node, cause))


# gdlab's extras (pyproject.toml) and what each adds, for the line an option without its package gives.
EXTRAS = {"sweep": "every sweep plugin", "loggers": "MLflow and W&B"}
# Modules that options of gdlab's config import but only an extra installs: module -> (what `pip install`
# needs for the option to work, the extra). MLflow's local store is SQLite: mlflow-skinny needs both others.
OPTIONAL_PACKAGES = {
    "mlflow": ("mlflow-skinny sqlalchemy alembic", "loggers"),
    "sqlalchemy": ("mlflow-skinny sqlalchemy alembic", "loggers"),
    "alembic": ("mlflow-skinny sqlalchemy alembic", "loggers"),
    "wandb": ("wandb", "loggers"),
}


def not_installed(setting: str, needs: str, install: str, extra: str) -> str:
    """The line for an option whose optional package is missing: the pip command, and gdlab's extra."""
    return (
        f"{setting} needs {needs}, which is not installed: `pip install {install}` "
        f"(in a clone of gdlab: `pip install -e '.[{extra}]'`, which adds {EXTRAS[extra]})"
    )


def missing_module(err: ImportError) -> str | None:
    """The top-level module an ImportError says is missing: its ``name`` (``No module named 'wandb'``), or
    the package Lightning's loggers quote (``Requirement 'mlflow>=1.0.0' not met``)."""
    name = err.name
    if name is None:
        quoted = re.search(r"(?:Requirement|Module not found:) '([\w.]+)", str(err))
        name = quoted.group(1) if quoted else None
    return name.split(".")[0] if name else None


def _setting_line(key: str, node: Mapping[str, Any] | None, cause: BaseException) -> str:
    message = first_line(cause)
    if isinstance(cause, ImportError) and missing_module(cause) in OPTIONAL_PACKAGES:
        module = missing_module(cause)
        return not_installed(key, f"the optional package {module}", *OPTIONAL_PACKAGES[module])
    argument = getattr(cause, "argument", None)
    if argument is None and node is not None:
        argument = quoted_argument(node, message) or worded_argument(node, message)
    if argument is not None:
        if node is not None and argument in node:
            return f"{key}.{argument}={show(_get(node, argument))}: {message}"
        return f"{key}.{argument}: {message}"
    if type(cause).__name__ == "MisconfigurationException" and key == "trainer":
        # Lightning's message for a device that is not there (trainer=gpu on a CPU machine, ...)
        lowered = message.lower()
        if "accelerator" in lowered or "gpu" in lowered or "backend" in lowered:
            return (
                f"trainer: {message} Use trainer=cpu (or trainer.accelerator=auto) on a machine without it."
            )
        return f"trainer: {message}"
    if isinstance(cause, (ValueError, TypeError)) or type(cause).__name__ == "MisconfigurationException":
        return f"{key}: {message}"
    return f"{key}: {type(cause).__name__}: {message}"


def quoted_argument(node: Mapping[str, Any], message: str) -> str | None:
    """The one argument of ``node`` whose value a library's message quotes (``Precision 'bogus' is invalid``,
    ``Trainer(devices=0)``) or whose name it puts in backticks (``the `limit_val_batches` argument``), so
    that the line can name the setting although the library did not."""
    found = []
    for name in node:
        value = node.get(name)
        if f"`{name}`" in message and not isinstance(value, Mapping):
            found.append(str(name))
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (str, int))
            or (value == "" and "=''" not in message)
        ):
            continue
        quoted = isinstance(value, str) and any(
            q in message for q in (f"'{value}'", f"`{value}`", f"{name}={value!r}")
        )
        if (value != "" and f"{name}={value}" in message) or quoted:
            found.append(str(name))
    return found[0] if len(found) == 1 else None


# torch.optim names the argument in words: "Invalid learning rate: -1", "Invalid beta parameter at index 1: 2".
_TORCH_WORDS = {"learning rate": "lr", "epsilon": "eps", "beta": "betas"}
# torch's sentences that name an argument in words of their own (SGD's nesterov=True without momentum).
_TORCH_SENTENCES = {"Nesterov momentum requires a momentum": "momentum"}
_INVALID = re.compile(r"^Invalid ([\w ]+?)(?: value| parameter)?(?: at index \d+)?: ")


def worded_argument(node: Mapping[str, Any], message: str) -> str | None:
    """The argument of ``node`` that an ``Invalid <argument in words>: <value>`` message (torch's optimizers'
    wording) is about, when ``node`` sets it."""
    said = next((name for start, name in _TORCH_SENTENCES.items() if message.startswith(start)), None)
    if said is not None:
        return said if said in node else None
    match = _INVALID.match(message)
    if match is None:
        return None
    words = match.group(1)
    name = _TORCH_WORDS.get(words, words)
    return name if name in node else None


def _get(node: Mapping[str, Any], key: str) -> Any:
    from omegaconf import OmegaConf

    value = node[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def show(value: Any) -> str:
    """A config value as a user types it on the command line: ``0.1``, ``null``, ``[16, 32]``, ``mlp``."""
    if value is None:
        return "null"
    if value == "":
        return "''"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


# The one group whose folder may not exist: conf/local/ is git-ignored (one's own settings).
LOCAL_GROUP = "local"


def unknown_option(group: str, option: str, options: list[str], typed: str | None = None) -> str:
    """The line for a group option that does not exist (``model=mlpp``, ``+local=foo``), naming the group
    as typed (``typed``: ``+local``) when that differs from its name."""
    shown = f"{typed or group}={option}"
    if options:
        return f"{shown} is not an option: choose one of {', '.join(sorted(options))}"
    return f"{shown} is not an option: conf/{group}/ has none (add conf/{group}/{option}.yaml)"


def first_line(err: BaseException | str) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")


def _chain(err: BaseException, *, context: bool = False) -> list[BaseException]:
    """``err`` and its causes; with ``context``, also the error being handled when each was raised."""
    chain = [err]
    while True:
        last = chain[-1]
        behind = last.__cause__ or (last.__context__ if context else None)
        if behind is None or behind in chain:
            return chain
        chain.append(behind)


# The longest line an error prints (and metrics.json keeps): a library's message can quote a whole input.
MAX_LINE = 600


def describe(err: BaseException) -> str:
    """One line that says what is wrong and, where we know it, which setting to change and how (at most
    ``MAX_LINE`` characters)."""
    line = _describe(err)
    return line if len(line) <= MAX_LINE else f"{line[: MAX_LINE - 40]} ... ({len(line)} characters in all)"


def _describe(err: BaseException) -> str:
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        if group:
            return unknown_option(group, option, list(err.options))
    if isinstance(err, OverrideParseException):
        return f"cannot parse the command line: {first_line(err)}"
    # The first of our own errors behind ``err`` is the message meant for the user: Hydra wraps it, and
    # OmegaConf re-raises a resolver's error with its cause cleared (it stays the context).
    ours = next((e for e in _chain(err, context=True) if isinstance(e, (ConfigError, RunError))), None)
    if ours is not None:
        return first_line(ours)
    missing = next((e for e in _chain(err, context=True) if isinstance(e, MissingMandatoryValue)), None)
    if missing is not None:
        # OmegaConf's "Missing mandatory value: <key>" (its full_key is not set on every path that raises it)
        name = getattr(missing, "full_key", None) or first_line(missing).rpartition(": ")[2]
        return f"{name} is required: pass {name}=<value> on the command line"
    cause = _chain(err)[-1]
    key = getattr(cause, "full_key", None)
    if isinstance(cause, ValidationError):
        return f"{key}: {first_line(cause)}: pass a value of the right type" if key else first_line(cause)
    overridden = re.match(r"Could not override '([\w/]+)'\.\s+To append to your config use \+(\S+)", str(err))
    if overridden and overridden.group(1) == LOCAL_GROUP:
        # `local=foo` without conf/local/default.yaml: Hydra's advice (+local=foo) would add a plain key
        return unknown_option(LOCAL_GROUP, overridden.group(2).partition("=")[2], [])
    if isinstance(cause, (ConfigKeyError, AttributeError)) and "not in struct" in str(cause):
        # Hydra's own text names the key and says "To append to your config use +key=value".
        text = str(err) if isinstance(err, ConfigCompositionException) else str(cause)
        lines = [line.strip() for line in text.splitlines() if line.strip() and "full_key" not in line]
        return " ".join(lines[:2]) + " (or fix the spelling of the key)"
    if isinstance(err, ConfigCompositionException | OmegaConfBaseException):
        return " ".join(line.strip() for line in str(err).splitlines()[:2] if line.strip())
    if isinstance(cause, OSError) and cause.errno is not None:
        where = cause.filename or "the output directory"
        if cause.errno == errno.ENAMETOOLONG:
            return f"the path {where} is too long for the file system: pass a shorter paths.root=<dir>"
        if cause.errno == errno.ENOSPC:
            return f"no space left on the disk holding {where}: free space or pass paths.root=<another disk>"
        return f"cannot write {where}: {cause.strerror}: pass a writable paths.root=<dir> (or fix its permissions)"
    return f"{type(cause).__name__}: {first_line(cause)}"
