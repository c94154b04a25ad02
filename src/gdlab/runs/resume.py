"""Run directory names, and ``resume=<run dir>|last``: a run continues in its own directory with the
overrides it was started with.

Both go through Hydra's own mechanisms. While Hydra composes, the resolvers of
``conf/hydra/default.yaml`` (registered in ``hydra_plugins.gdlab_plugins``) name a new run's directory
after its overrides, or turn ``resume`` into the resumed run's directory, where Hydra then logs and
whose ``.hydra/`` record it leaves as it was. In the task, :func:`resumed_config` composes the config
again from that run's overrides plus the ones given now, which win.

Nothing here imports torch: the resolvers run before the command line is fully parsed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gdlab.errors import ConfigError

LAST = "last"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
RUNS = "runs"
# Characters a directory name keeps: safe unquoted in Hydra overrides (resume=<dir>), in a POSIX shell and
# on Windows. Anything else (=, commas, spaces, quotes, brackets, non-ASCII, ...) becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]+")
MAX_LABEL = (
    120  # file names stop at 255 bytes; the time stamp or job number before the label keeps names unique
)


def label(overrides: str) -> str:
    """``_<overrides>`` as a safe directory-name suffix (``""`` for none): ``_model-mlp_optimizer.lr-0.1``.

    ``overrides`` is Hydra's ``hydra.job.override_dirname``. Long ones are cut, with a short hash of the
    whole text so that different overrides stay apart.
    """
    text = _UNSAFE.sub("_", overrides).strip("_")
    if len(text) > MAX_LABEL:
        text = f"{text[: MAX_LABEL - 10]}...{hashlib.sha1(overrides.encode()).hexdigest()[:7]}"
    return f"_{text}" if text else ""


def resuming(resume: str | None, ckpt_path: str | None) -> bool:
    """``resume=<dir>|last``, or ``ckpt_path=last`` (the same as ``resume=last``)."""
    return bool(resume) or ckpt_path == LAST


def checked_root(root: str) -> str:
    """``paths.root``, refused when empty: runs would go to the file system's root (``/runs/...``)."""
    if not str(root).strip():
        raise ConfigError(
            "paths.root is empty: runs would be written at the file system's root; pass a directory, "
            "e.g. paths.root=outputs"
        )
    return str(root)


def run_dir(root: str, stamp: str, overrides: str, resume: str | None, ckpt_path: str | None) -> str:
    """The directory of this run: the resumed run's, else ``<root>/runs/<stamp><label>``."""
    root = checked_root(root)
    if not resuming(resume, ckpt_path):
        from gdlab.runs.torchrun import shared_name

        return str(Path(root) / RUNS / shared_name(f"{stamp}{label(overrides)}"))
    setting = "resume" if resume else "ckpt_path"
    target = str(resume or LAST)  # a path typed as a number (resume=2026) is still a path
    path = latest_run(root, setting) if target == LAST else Path(os.path.expanduser(target.strip("'\"")))
    if not (path / LAST_CKPT).is_file():
        raise ConfigError(
            f"{setting}={target}: {path / LAST_CKPT} does not exist: pass a run directory that holds "
            f"one (e.g. {Path(root) / RUNS}/<time>), or resume=last"
        )
    return str(path.resolve())


def latest_run(root: str | os.PathLike, setting: str = "resume") -> Path:
    """The newest ``<root>/runs/<time>...`` directory that holds ``checkpoints/last.ckpt``."""
    runs = Path(root) / RUNS
    candidates = sorted(p for p in runs.glob("*") if (p / LAST_CKPT).is_file()) if runs.is_dir() else []
    if not candidates:
        raise ConfigError(
            f"{setting}=last: no run under {runs} has {LAST_CKPT}: train first, or pass resume=<run dir>"
        )
    return candidates[-1]  # names start with the start time (%Y-%m-%d_%H-%M-%S-%f): they sort by it


def override_key(override: str) -> str:
    """The key an override sets: ``+a.b=1`` -> ``a.b``, ``~a`` -> ``a``, ``model=mlp`` -> ``model``."""
    return override.lstrip("+~").split("=", 1)[0]


def drop_overridden(base: Sequence[str], newer: Sequence[str]) -> list[str]:
    """``base`` without the overrides whose key (or a key under it) ``newer`` sets again."""
    keys = {override_key(o) for o in newer}
    return [
        o for o in base if not any(override_key(o) == k or override_key(o).startswith(k + ".") for k in keys)
    ]


def resumed_config(cfg: DictConfig) -> DictConfig:
    """Inside a Hydra task that resumes a run: the config of that run's overrides plus the ones given now.

    Hydra has already put the run in the resumed directory (``hydra.runtime.output_dir``); its
    ``.hydra/overrides.yaml`` holds the overrides it was started with.
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run = Path(hydra_cfg.runtime.output_dir)
    recorded = run / ".hydra" / "overrides.yaml"
    original = [str(o) for o in OmegaConf.load(recorded)] if recorded.is_file() else []
    given = [o for o in hydra_cfg.overrides.task if override_key(o) not in ("resume", "ckpt_path")]
    composed = compose(hydra_cfg.job.config_name, overrides=[*drop_overridden(original, given), *given])
    composed.resume, composed.ckpt_path = str(run), None
    return composed
