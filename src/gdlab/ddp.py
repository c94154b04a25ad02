"""Lightning's DDP under Hydra, single runs and multiruns alike: one output directory per job.

Lightning's ``strategy="ddp"`` starts ranks 1.. by re-running the command line. Under a Hydra multirun
that command holds ``-m`` and every sweep value, so each child would run its own copy of the sweep.
:class:`HydraDDPStrategy` starts each child as a single run of *this job only*: the job's own overrides
(sweep or optuna values included) into the job's own directory. :class:`DDPJobCleanup` (a Hydra
callback) undoes what a job's launcher left in the environment, so the next job of a sweep starts its
own process group instead of waiting for peers that already exited.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from unittest import mock

from hydra.experimental.callback import Callback
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script
from omegaconf import DictConfig

# What Lightning's subprocess launcher sets in the parent's environment for its children.
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def job_command(local_rank: int) -> tuple[list[str], str]:
    """The command line and cwd that start rank ``local_rank`` of the current Hydra job as a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += list(hydra_cfg.overrides.task)  # this job's values, not the sweep's lists
    output_dir = hydra_cfg.runtime.output_dir
    command += [
        f'hydra.run.dir="{output_dir}"',  # quoted: job dir names hold '=' and ','
        f"hydra.job.name=train_ddp_process_{local_rank}",  # its own log file in the same directory
        "hydra.output_subdir=null",  # rank 0 already saved the configs
        "hydra.mode=RUN",  # a config that sets hydra.mode=MULTIRUN (hparams_search) must not sweep again
    ]
    return command, get_original_cwd()


class _HydraJobLauncher(subprocess_script._SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        # Lightning builds the child command with `_hydra_subprocess_cmd`; swap in `job_command`.
        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", job_command):
            super()._call_children_scripts()


class HydraDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose child processes re-run only the current Hydra job (see module docstring)."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is subprocess_script._SubprocessScriptLauncher:
            self._launcher = _HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


class DDPJobCleanup(Callback):
    """Hydra callback: after each job, destroy its process group and restore the launcher's env vars."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._env = {k: os.environ.get(k) for k in LAUNCHER_ENV}

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in getattr(self, "_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
