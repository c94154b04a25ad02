"""The processes of a run: a run whose DDP processes Lightning starts runs in a child process of its own.

Lightning's DDP (``strategy=ddp``) keeps rank 0 in the process that calls ``fit``, starts ranks
1..N-1 by running the command line again, and, when one of them fails, kills them all, the caller
included. In a Hydra multirun that caller is the sweep and the command line is the sweep's: the
other ranks would run a sweep of their own, and one failing job would end the jobs after it. So a
run for which Lightning would start processes runs instead as a single run in a child process,
``python -m gdlab <its overrides>`` in its own run directory; Lightning starts the other ranks from
there, exactly as for ``python train.py trainer=ddp``. This process only waits, passes a stop signal on
to rank 0, and records the run as failed if its processes end without recording anything themselves
(killed, out of memory). Every process of a run dies with the process that started it (Linux's
``PR_SET_PDEATHSIG``): a run never trains on after its command is gone. This process also adopts the
run's processes whose parent ends first (``PR_SET_CHILD_SUBREAPER``), so it sees them end at once instead
of waiting for PID 1 to reap them, which in a container can take seconds or never happen.
Processes that torchrun or SLURM started (``creates_processes_externally``) train where they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gdlab.errors import ConfigError, RunError
from gdlab.runs import signals
from gdlab.runs.record import METRICS_FILE, STOPPED_NOTE, read_metrics, record_stopped, write_metrics
from gdlab.runs.resume import override_key
from gdlab.runs.signals import describe as describe_signal

log = logging.getLogger(__name__)

# Set in the child's environment (to the id of the process that waits for it): its run trains in that
# process (Lightning starts the other ranks).
CHILD_ENV = "GDLAB_RUN_PROCESS"
# What one training process of a small run takes (peak resident memory, measured ~0.45 GiB).
PROCESS_BYTES = 512 * 2**20
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36  # <linux/prctl.h>
# Hydra settings of the command line the child keeps: where configs are found and how it logs.
KEPT_HYDRA_KEYS = ("hydra.searchpath", "hydra.verbose", "hydra/job_logging", "hydra/hydra_logging")


def in_multirun() -> bool:
    """True inside a Hydra multirun job (``python train.py -m ...``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def die_with_parent() -> None:
    """In a process that a run started (its DDP rank 0 child, Lightning's other ranks, torchrun's workers):
    ask Linux to signal this process when the one that started it dies, so no process of a run outlives
    its command (even one killed with SIGKILL). The run's rank 0 child gets SIGTERM (it saves last.ckpt
    and records the run), and so does every torchrun worker; the other ranks Lightning started get
    SIGKILL, and pass a stop signal they receive on to rank 0. Elsewhere (not Linux, a plain run) it does
    nothing."""
    from gdlab.runs.torchrun import under_torchrun

    parent = os.environ.get(CHILD_ENV)
    if not (parent or under_torchrun()) or not sys.platform.startswith("linux"):
        return
    # torchrun's workers all stop together (they agree on a step); Lightning's other ranks die with rank 0.
    saves = under_torchrun() or "LOCAL_RANK" not in os.environ
    deathsig = signal.SIGTERM if saves else signal.SIGKILL
    if not saves:
        signals.follow(os.getppid())  # a stop signal is rank 0's to act on
    if not _prctl(PR_SET_PDEATHSIG, int(deathsig)):
        return
    if parent and parent.isdigit() and "LOCAL_RANK" not in os.environ and os.getppid() != int(parent):
        os.kill(os.getpid(), deathsig)  # the parent died before prctl took effect


def _prctl(option: int, value: int) -> bool:
    """Linux's ``prctl(option, value)``; False where it is not there."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """While inside, a process this one started, directly or not, whose parent ends before it (a rank
    when rank 0 ends) becomes this process's child (Linux's child subreaper), so that :func:`_end_group`
    reaps it the moment it ends. Otherwise it would wait for PID 1 to reap it, and a container's PID 1 may
    take seconds or never do so: the command would wait out its grace period after every DDP run."""
    adopted = sys.platform.startswith("linux") and _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield
    finally:
        if adopted:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)


def check_process_count(trainer: Any) -> None:
    """Refuse, before any process starts, more training processes on this machine than it has CPU cores
    (CPU training) or memory for: they would crawl or be killed, with no answer for minutes."""
    local = int(trainer.num_devices)
    if local <= 1:
        return
    cores = os.cpu_count() or 1
    if trainer.strategy.root_device.type == "cpu" and local > cores:
        raise ConfigError(
            f"trainer.devices={local}: {local} training processes on a machine with {cores} CPU cores: "
            f"pass trainer.devices={cores} or fewer"
        )
    available = _available_memory()
    if available is not None and local * PROCESS_BYTES > available:
        most = max(1, available // PROCESS_BYTES)
        raise ConfigError(
            f"trainer.devices={local}: {local} training processes need about {local * PROCESS_BYTES / 2**30:.1f} "
            f"GiB, {available / 2**30:.1f} GiB is available: pass trainer.devices={most} or fewer"
        )


def _available_memory() -> int | None:
    """Linux's estimate of the memory available to new processes (``MemAvailable``), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def launches_processes(cfg: DictConfig) -> bool:
    """True when Lightning would start this run's other DDP processes itself (more than one process, none
    started by torchrun or SLURM), and this is not already the run's own child process."""
    if os.environ.get(CHILD_ENV):
        return False
    trainer_cfg = cfg.trainer
    if trainer_cfg.get("devices", 1) == 1 and (trainer_cfg.get("num_nodes") or 1) == 1:
        return False  # one process: nothing to ask Lightning
    from hydra.utils import instantiate

    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = rank_zero_log.level
    rank_zero_log.setLevel(logging.WARNING)  # the real Trainer reports the devices; this one only counts them
    try:
        trainer = instantiate(
            trainer_cfg, logger=False, callbacks=[], enable_progress_bar=False, enable_model_summary=False
        )
    except Exception:
        return False  # a Trainer that cannot be built: training here builds it again and records why
    finally:
        rank_zero_log.setLevel(level)
    launches = (
        trainer.world_size > 1 and not trainer.strategy.cluster_environment.creates_processes_externally
    )
    if launches:
        check_process_count(trainer)
    return launches


def hydra_quote(text: str) -> str:
    """``text`` as a quoted Hydra override value (backslashes that precede a quote are doubled)."""
    body = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)
    return f"'{body}'"


def child_command(output_dir: Path) -> list[str]:
    """``python -m gdlab`` with this job's configs, overrides and run directory, as a single run."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "gdlab"]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":  # --config-dir
            command += ["--config-dir", source.path]
    command += ["--config-name", hydra_cfg.job.config_name]
    command += list(hydra_cfg.overrides.task)
    command += [o for o in hydra_cfg.overrides.hydra if override_key(o).startswith(KEPT_HYDRA_KEYS)]
    # This job's directory, no second .hydra/ record, and a single run even when the config says MULTIRUN.
    command += [f"hydra.run.dir={hydra_quote(str(output_dir))}", "hydra.output_subdir=null", "hydra.mode=RUN"]
    return command


def run_in_child(cfg: DictConfig) -> dict[str, Any]:
    """Run this job as a single run in a child process; return the record it wrote to metrics.json.

    A run that failed raises :class:`RunError`, except in a single run whose child already
    printed its one error line: then this process ends with the child's exit status and says nothing."""
    import gdlab

    output_dir = Path(cfg.paths.output_dir).resolve()
    env = {**os.environ, CHILD_ENV: str(os.getpid())}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(gdlab.__file__).parents[1]), env.get("PYTHONPATH")) if p
    )
    log.info("the run's DDP processes start in a child process (rank 0's log lines follow)")
    # A process group of its own: whatever the run's processes leave behind (a rank whose rank 0 was
    # killed) ends with it, and never outlives this command.
    with adopting_orphans():
        child = subprocess.Popen(child_command(output_dir), env=env, start_new_session=True)
        try:
            code = child.wait()
        except KeyboardInterrupt as stop:
            # A stop signal (Ctrl+C, SIGTERM, SIGHUP): pass it on to rank 0 (the child) only, and let the
            # run save last.ckpt and record "interrupted" first. Lightning's rank 0 then ends the other ranks
            # itself; a rank interrupted on its own could leave rank 0 waiting in a collective operation for
            # it, for good.
            signum = getattr(stop, "signum", signal.SIGINT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            _end_group(child.pid)
            if not (output_dir / METRICS_FILE).is_file():  # stopped while its processes started up
                note = (
                    f"stopped by {describe_signal(signum)} while its processes started up, before it trained"
                )
                write_metrics(output_dir, {}, status="interrupted", note=note)
            if not record_stopped(output_dir, STOPPED_NOTE) and not in_multirun():
                raise SystemExit(128 + signum) from None  # the run's own process said "interrupted (...)"
            raise
        finally:
            _end_group(child.pid)
    record = read_metrics(output_dir) if (output_dir / METRICS_FILE).is_file() else {}
    reported = record.get("status") not in (None, "running")
    if not reported:
        record.update(
            status="failed",
            error=f"the run's processes ended with exit status {code} before it finished: see the logs in {output_dir}",
        )
        write_metrics(output_dir, {k: v for k, v in record.items() if k != "status"}, status="failed")
    if record["status"] in ("completed", "stopped_early", "diverged") and code == 0:
        return record
    if reported and not in_multirun():
        raise SystemExit(code or 1)
    raise RunError(str(record.get("error") or f"the run ended with status {record['status']}"))


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process left in the child's process group; False when none is left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process of the child's group is left, once those this process adopted and that have
    ended are reaped (an ended process counts as one of the group until its parent reaps it)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
            pass
    return _signal_group(pgid, 0)


def _outlives(pgid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for the child's group to end; True when some of it is still there."""
    deadline = time.monotonic() + seconds
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.05)
    return False


def _end_group(pgid: int, grace: float = 5.0) -> None:
    """Give the run's other processes ``grace`` seconds to end on their own, then kill what is left and
    reap it as it ends."""
    if _outlives(pgid, grace) and _signal_group(pgid, signal.SIGKILL):
        _outlives(pgid, 1.0)
