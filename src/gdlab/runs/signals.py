"""Stopping a run: SIGINT (Ctrl+C), SIGTERM (``timeout``, SLURM, Kubernetes) and SIGHUP (a closed terminal)
all stop it the same way, and the command ends with exit status 128 + the signal's number.

The first signal raises :class:`Interrupted` (a ``KeyboardInterrupt``, which Lightning, Hydra and the run
record already treat as Ctrl+C) at once, except while a run trains: there
:class:`gdlab.callbacks.stop.StopAtStepEnd` raises it at the end of the current optimizer step, so
last.ckpt holds a whole step and ``resume`` continues bit for bit. A second signal while that step has
still not ended seconds later stops at once; other repeats are ignored while the run records how it
ended (no traceback, no half-written record). Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A second signal this many seconds after the first, while the step has not ended, stops at once (a step
# that hangs, e.g. waiting for a DDP process that is gone); sooner, it is the same request again.
INSIST_AFTER = 2.0


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised where the run can stop; ``signum`` is the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(describe(signum))
        self.signum = signum


class _State:
    """What this process has received: the first stop signal, whether it was raised, whether to wait."""

    signum: int | None = None
    raised = False
    deferred = False
    abrupt = False  # raised in the middle of training (a second signal): the state may be mid-step
    since = 0.0  # when the first signal came (time.monotonic)
    leader: int | None = None  # a DDP rank that Lightning started: the process (rank 0) it passes signals to


_state = _State()


def describe(signum: int) -> str:
    """``Ctrl+C`` for SIGINT, else the signal's name (``SIGTERM``)."""
    return "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name


def received() -> int | None:
    """The first stop signal this process received (None: none)."""
    return _state.signum


def exit_status(signum: int) -> int:
    """The shell's convention for a command ended by a signal: 128 + its number (130 for Ctrl+C)."""
    return 128 + int(signum)


def _handle(signum: int, frame: FrameType | None) -> None:
    if _state.leader is not None:
        # One process decides for the run: a signal sent to every process (a process group, a container)
        # reaches rank 0 once more, which stops every rank at the same step and ends this one.
        with contextlib.suppress(ProcessLookupError):
            os.kill(_state.leader, signum)
        return
    if _state.signum is None:
        _state.signum, _state.since = signum, time.monotonic()
        if _state.deferred:
            return  # no logging here: a handler that writes may interrupt a write to the same stream
    elif _state.raised or not _state.deferred or time.monotonic() - _state.since < INSIST_AFTER:
        return  # already stopping (or the same keypress twice): the run saves and records how it ended
    _state.raised = True
    _state.abrupt = _state.deferred
    raise Interrupted(_state.signum)


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP in this process (main thread only, as Python allows)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handle)


def follow(leader: int) -> None:
    """In a DDP rank that Lightning started: pass stop signals on to ``leader`` (rank 0) instead."""
    _state.leader = leader


def reset() -> None:
    """Forget a received signal (a new run in the same process, e.g. a test)."""
    _state.signum, _state.raised, _state.deferred, _state.abrupt = None, False, False, False
    _state.leader = None


def abrupt() -> bool:
    """True when a second signal stopped training in the middle of a step: its state is no checkpoint."""
    return _state.abrupt


def defer(on: bool) -> None:
    """While ``on``, a first stop signal waits for :func:`stop_requested` instead of raising at once."""
    _state.deferred = on


def stop_requested() -> bool:
    """True once when a stop signal came while deferred; the caller raises :class:`Interrupted`."""
    if _state.signum is None or _state.raised:
        return False
    _state.raised = True
    return True


def stop_now() -> None:
    """Raise :class:`Interrupted` if a stop signal came while it waited (e.g. in the run's last step)."""
    if _state.signum is not None and not _state.raised:
        _state.raised = True
        raise Interrupted(_state.signum)
