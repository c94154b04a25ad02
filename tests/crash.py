"""Test-only callbacks that end a training process abruptly at a chosen optimizer step."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L


class SignalAtStep(L.Callback):
    """Send ``signal_name`` (SIGKILL: no cleanup at all) to this process (or its parent) after optimizer step
    ``step`` (in the process of global rank ``rank`` only, when given), ``times`` times.

    Only once: it leaves a marker file in the run directory, so the resumed run (which restores the
    same overrides, this callback included) goes past that step.
    """

    def __init__(
        self,
        step: int,
        signal_name: str = "SIGKILL",
        rank: int | None = None,
        parent: bool = False,
        times: int = 1,
    ) -> None:
        self.step = step
        self.signal = getattr(signal, signal_name)
        self.rank = rank  # None: every process
        self.parent = parent  # signal the process that started this one (a DDP run's waiting command)
        self.times = times  # signals sent one right after the other (a user pressing Ctrl+C twice)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        marker = Path(trainer.default_root_dir) / (
            ".signal-sent" + ("" if self.rank is None else f"-{self.rank}")
        )
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if trainer.global_step == self.step and not marker.exists():
            marker.write_text(f"{signal.Signals(self.signal).name} at step {self.step}\n")
            for _ in range(self.times):
                os.kill(os.getppid() if self.parent else os.getpid(), self.signal)


class RaiseAtStep(L.Callback):
    """Raise an error in the process of global rank ``rank`` (and only there) after optimizer step ``step``."""

    def __init__(self, step: int, rank: int) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            raise RuntimeError(f"a failure on rank {self.rank} only, at step {self.step}")
