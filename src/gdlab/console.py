"""What a run prints: its config (the overrides, or all of it with ``print_config=full``), and Lightning's
lines once each, through the run's logging (so they reach ``train.log`` too), without its promotional tips.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("gdlab.train")

PRINT_CONFIG = ("overrides", "full", "none")
# Lightning's upsell lines ("💡 Tip: ... try installing litlogger"): not about the run.
_TIPS = "💡 Tip:"


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIPS)


def route_lightning_logs() -> None:
    """Lightning's lines once each, through Hydra's handlers (console and ``train.log``), tips dropped."""
    # lightning.pytorch and lightning.fabric add their own stream handlers at import time (before Hydra
    # configures logging) and stop propagation, so their messages would miss the run's log file; the
    # `lightning` package's handler would print each of them a second time ("INFO: ...").
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lightning_logger = logging.getLogger(name)
        lightning_logger.handlers.clear()
        lightning_logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
    # Lightning 2.6 calls a torch API that torch 2.13 deprecates, on every fit: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)


def rounded(value: Any, digits: int = 6) -> Any:
    """Numbers (also inside lists and dicts) to ``digits`` significant digits, for a line a person reads."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return value


def print_config(cfg: DictConfig, overrides: list[str], saved_to: str) -> None:
    """``print_config=overrides`` (default): one line with the run's overrides and the name of the saved config;
    ``full``: the composed config as YAML, groups first (syntax-highlighted in a terminal); ``none``."""
    mode = cfg.get("print_config", "overrides")
    if mode == "none":
        return
    if mode == "full":
        from rich.console import Console
        from rich.syntax import Syntax

        order = ["data", "model", "loss", "optimizer", "trainer", "callbacks", "logger", "paths"]
        resolved = OmegaConf.to_container(cfg, resolve=True)
        keys = [k for k in order if k in resolved] + [k for k in resolved if k not in order]
        text = OmegaConf.to_yaml({k: resolved[k] for k in keys}, sort_keys=False)
        Console().print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
        return
    given = " ".join(overrides) if overrides else "none (the defaults)"
    log.info(
        "overrides: %s; every setting: %s in the run directory (print_config=full prints them)",
        given,
        saved_to,
    )
