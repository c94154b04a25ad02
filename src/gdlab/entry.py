"""The command line: ``python train.py`` / ``gdlab-train`` / ``python -m gdlab`` and ``python eval.py`` /
``gdlab-eval``.

Hydra parses the command line, composes the config from ``conf/`` (shipped in the package as
``gdlab.conf``; ``conf/local/`` and any ``--config-dir`` included) and runs the task; this layer turns any
failure into one line on stderr and exit status 1 (``verbose=true`` shows the traceback instead), and
a stop signal (Ctrl+C, SIGTERM, SIGHUP: :mod:`gdlab.runs.signals`) into exit status 128 + its number. A failed job of a multirun is recorded and the sweep goes on; the sweep's
summary sets the exit status at its end.
Only Hydra and OmegaConf are imported here: ``--help`` and ``--cfg job`` need no torch.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hydra
from omegaconf import DictConfig

from gdlab.conf import CONFIG_PACKAGE
from gdlab.errors import describe, exit_with

log = logging.getLogger(__name__)

_TRUE = ("true", "True", "1", "yes")


def _task(body: Callable[[DictConfig], Any], failed: list[BaseException]) -> Callable[[DictConfig], Any]:
    """Wrap a task body (imported only when the task runs) for Hydra. A single run's error is kept in
    ``failed`` for :func:`_run` to print (Hydra would add a line of its own to an error raised through it);
    a failed job of a multirun is recorded and the sweep goes on."""

    def run_task(cfg: DictConfig) -> Any:
        try:
            return body(cfg)
        except KeyboardInterrupt as stop:
            from gdlab.runs import signals

            _record_interrupted_start(getattr(stop, "signum", None) or signals.received() or signal.SIGINT)
            raise
        except Exception as err:
            from gdlab.runs.processes import in_multirun

            if not in_multirun():
                failed.append(err)
                return None
            # The job's metrics.json records the failure; the sweep goes on and its summary counts it.
            line = describe(err)
            log.error("job failed: %s", line, exc_info=err if cfg.get("verbose") else None)
            _record_failure(line)
            return None

    return run_task


@contextmanager
def _importing(module: str) -> Iterator[None]:
    """Import ``module`` (and with it torch and Lightning) with the cyclic garbage collector paused, then
    freeze what the import made.

    Those imports create millions of long-lived objects: collections triggered while importing walk them
    again and again (about a sixth of the import time), and every later collection, the one at interpreter
    exit included (about a second), would too. ``gc.freeze()`` moves them out of the collector's sight; they
    live as long as the process anyway. Only the first import does this: a later sweep job's freeze would
    also keep the garbage of the jobs before it."""
    if module in sys.modules:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _record_failure(line: str) -> None:
    """Give a sweep job that failed before its run record existed one, so the summary counts it."""
    from hydra.core.hydra_config import HydraConfig

    from gdlab.runs.record import METRICS_FILE, write_metrics

    output_dir = HydraConfig.get().runtime.output_dir
    if not os.path.exists(os.path.join(output_dir, METRICS_FILE)):
        write_metrics(output_dir, {}, "failed", error=line)


def _record_interrupted_start(signum: int) -> None:
    """A run stopped during start-up (before its record existed) still gets one: ``interrupted``."""
    from hydra.core.hydra_config import HydraConfig

    from gdlab.runs import signals
    from gdlab.runs.record import METRICS_FILE, write_metrics

    if not HydraConfig.initialized():
        return
    output_dir = HydraConfig.get().runtime.output_dir
    if (
        output_dir
        and os.path.isdir(output_dir)
        and not os.path.exists(os.path.join(output_dir, METRICS_FILE))
    ):
        note = f"stopped by {signals.describe(signum)} during start-up, before it trained"
        write_metrics(output_dir, {}, "interrupted", note=note)


def _train(cfg: DictConfig) -> float | None:
    with _importing("gdlab.train"):
        from gdlab.train import task

    return task(cfg)


def _evaluate(cfg: DictConfig) -> None:
    with _importing("gdlab.evaluate"):
        from gdlab.evaluate import evaluate

    evaluate(cfg)


def train_main() -> None:
    """``python train.py [overrides]``, ``gdlab-train`` and ``python -m gdlab``."""
    _run(_train, "train")


def eval_main() -> None:
    """``python eval.py ckpt_path=<file> [overrides]`` and ``gdlab-eval``."""
    _run(_evaluate, "eval")


def _run(body: Callable[[DictConfig], Any], config_name: str) -> None:
    """Run ``body`` under Hydra's main with ``<config_name>.yaml``; any failure becomes one line on stderr
    (exit status 1), a stop signal (Ctrl+C, SIGTERM, SIGHUP) exit status 128 + its number.

    Hydra raises the errors of composition as they are (``HYDRA_FULL_ERROR``, its documented switch,
    instead of its own multi-line report); a single run's error comes back from the task. A sweep whose
    jobs did not all complete ends with its summary's line (:class:`gdlab.runs.sweep.SweepSummary`)."""
    # verbose=true is a setting, but errors can come before the config exists: read it as typed.
    verbose = any(
        arg.lstrip("+").partition("=")[::2] == ("verbose", value) for arg in sys.argv[1:] for value in _TRUE
    )
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from gdlab.runs import signals
    from gdlab.runs.processes import die_with_parent

    signals.reset()
    signals.install()
    die_with_parent()
    failed: list[BaseException] = []
    hydra_main = hydra.main(
        version_base="1.3", config_path=f"pkg://{CONFIG_PACKAGE}", config_name=config_name
    )
    try:
        hydra_main(_task(body, failed))()
    except KeyboardInterrupt as stop:
        # A stop signal: the run's metrics.json already says "interrupted" (train saves last.ckpt first); a
        # sweep also gets the summary of its jobs so far, and starts no further job.
        signum = getattr(stop, "signum", None) or signals.received() or signal.SIGINT
        if verbose:
            raise
        from gdlab.runs.sweep import close_interrupted

        _record_interrupted_start(signum)
        summary = close_interrupted()
        said = f"interrupted ({signals.describe(signum)})"
        print(said + (f"; the sweep so far: {summary}" if summary else ""), file=sys.stderr)
        raise SystemExit(signals.exit_status(signum)) from None
    except Exception as err:
        failed.append(err)
    if not failed:
        return
    if verbose:
        raise failed[0]
    from gdlab.runs.record import is_rank_zero

    if not is_rank_zero():  # a DDP run's other ranks fail with it: rank 0's line is the run's one line
        log.error(describe(failed[0]))  # in that rank's own log file
        raise SystemExit(1)
    exit_with(describe(failed[0]))
