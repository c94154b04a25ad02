"""Run directories: a run never overwrites another one, and an unusable directory fails before training."""

from __future__ import annotations

import shutil
from pathlib import Path

from gdlab.errors import ConfigError
from gdlab.results import METRICS_FILE, read_metrics

# Checkpoints, events and logs of a small run take a few MB; below this, stop before training.
MIN_FREE_BYTES = 64 * 2**20


def check_run_dir(output_dir: Path, resuming: bool) -> None:
    """Refuse a directory that already holds another run (unless resuming it), one that cannot be
    written, and a disk with less than ``MIN_FREE_BYTES`` free."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # a DDP child process (trainer=ddp) joins the run rank 0 started here
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
