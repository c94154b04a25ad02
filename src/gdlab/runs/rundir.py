"""Run directories: a run never overwrites another one, an unusable directory fails before training, one
process at a time owns a run (its lock file), and the resolved config is saved next to the results."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gdlab.errors import ConfigError, exit_with
from gdlab.runs.record import METRICS_FILE, is_rank_zero, read_metrics

# Checkpoints, events and logs of a small run take a few MB; below this, stop before training.
MIN_FREE_BYTES = 64 * 2**20
CONFIG_FILE = "config.yaml"
# Holds the id of the process that owns the run while it trains (removed when it ends).
LOCK_FILE = ".lock"


def check_run_dir(output_dir: Path, resuming: bool) -> None:
    """Refuse a directory that already holds another run (unless resuming it), one that cannot be
    written, and a disk with less than ``MIN_FREE_BYTES`` free."""
    if not is_rank_zero():  # a DDP process of a run that rank 0 started here
        return
    if not resuming and (output_dir / METRICS_FILE).is_file():
        status = read_metrics(output_dir).get("status", "unknown")
        raise ConfigError(
            f"hydra.run.dir={output_dir} already holds a run (status: {status}): pick a new directory, "
            f"or continue that run with resume={output_dir}"
        )
    probe = output_dir / ".write-probe"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"paths.root: cannot write the run directory {output_dir} ({err.strerror}): "
            "pass a writable paths.root=<dir>"
        ) from err
    free = shutil.disk_usage(output_dir).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"paths.root: only {free / 2**20:.1f} MiB free on the disk holding {output_dir} "
            f"(need {MIN_FREE_BYTES // 2**20} MiB): free space or pass paths.root=<dir on another disk>"
        )


def run_overrides() -> list[str]:
    """The overrides this run was started with, as typed (``model=mlp``, ``optimizer.lr=0.1``)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def save_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Save the resolved config as ``config.yaml`` in the run dir (Hydra's .hydra/ keeps the raw one)."""
    path = Path(output_dir) / CONFIG_FILE
    if is_rank_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def _holder(path: Path) -> int | None:
    """The process id written in a lock file (None: unreadable or empty, e.g. caught mid-write)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def lock_run(output_dir: Path, setting: str) -> Path | None:
    """Own the run in ``output_dir`` for this process: its lock file holds this process's id. A run that a
    live process owns is refused in one line naming that process (``setting``: how the user named the
    directory, e.g. ``resume=<dir>``); a lock whose process is gone is stale and taken over. Rank 0 only."""
    if not is_rank_zero():
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:  # being written right now, or garbage: look again
                time.sleep(0.1)
                holder = _holder(path)
            if holder is not None and holder != os.getpid() and _alive(holder):
                raise ConfigError(
                    f"{setting}: process {holder} is running this run now ({path} holds its id): wait for it "
                    f"to end or stop it (kill -INT {holder}), then try again"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: the process that held it is gone
            continue
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")
        return path
    raise ConfigError(f"{setting}: could not take {path}: another process keeps taking it; try again")


def unlock_run(path: Path | None) -> None:
    """Give up the run's lock file, if this process holds it."""
    if path is not None and _holder(path) == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class OutputDirCheck(Callback):
    """Hydra callback, before Hydra makes any directory: an empty ``hydra.run.dir`` or ``hydra.sweep.dir``
    is refused in one line (a run writes only under ``paths.root`` or a directory given by name).

    Hydra turns an ``Exception`` raised by a callback into a warning: the command ends here
    (:func:`gdlab.errors.exit_with`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_empty(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_empty(config, "sweep")


def _refuse_empty(config: DictConfig, mode: str) -> None:
    raw = OmegaConf.to_container(config.hydra[mode], resolve=False).get("dir")
    if raw is None or str(raw).strip() == "":
        exit_with(
            f"hydra.{mode}.dir is empty: the {mode} would be written into the directory you run in; pass a "
            f"directory (e.g. hydra.{mode}.dir=outputs/my_{mode}), or leave it out to write under paths.root",
            hint=False,
        )
