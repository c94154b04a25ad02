"""gdlab's hook into Hydra's start-up: Hydra imports every module under ``hydra_plugins`` before it
composes a config, so this is where gdlab registers what its configs need from Hydra itself.

- For each optional plugin of the ``sweep`` extra that is not installed (optuna sweeper, joblib and
  submitit launchers), a stand-in config under the same name whose plugin fails with one clear line:
  ``pip install hydra-optuna-sweeper``, instead of Hydra's "Could not find 'hydra/launcher/joblib'".
- The resolvers ``conf/hydra/default.yaml`` names run directories with (:mod:`gdlab.runs.resume`):
  ``gdlab_run_dir`` (a new run's directory, or the resumed run's), ``gdlab_root`` (``paths.root``,
  refused when empty), ``gdlab_job_name`` (the log file's name: one per torchrun rank),
  ``gdlab_label`` (a sweep job's
  directory suffix) and ``gdlab_output_subdir`` (no new ``.hydra/`` record in a resumed run); and
  ``gdlab_run_name`` (a run's name in MLflow and W&B, from its directory: ``conf/logger/``).
"""

from __future__ import annotations

import importlib.util
from typing import Any, NoReturn

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

# (config group, option) -> (module under hydra_plugins, pip distribution)
OPTIONAL_PLUGINS = {
    ("hydra/sweeper", "optuna"): ("hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    ("hydra/launcher", "joblib"): ("hydra_joblib_launcher", "hydra-joblib-launcher"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_submitit_launcher", "hydra-submitit-launcher"),
    ("hydra/launcher", "submitit_local"): ("hydra_submitit_launcher", "hydra-submitit-launcher"),
}


def missing_plugin_message(group: str, option: str, distribution: str) -> str:
    from gdlab.errors import not_installed

    return not_installed(
        f"{group}={option}", f"the optional Hydra plugin {distribution}", distribution, "sweep"
    )


def _fail(options: dict[str, Any]) -> NoReturn:
    from gdlab.errors import ConfigError

    raise ConfigError(missing_plugin_message(options["group"], options["option"], options["distribution"]))


class MissingLauncher(Launcher):
    """Stands in for a launcher plugin that is not installed; instantiating it raises the fix."""

    def __init__(self, **options: Any) -> None:
        _fail(options)

    def setup(self, **kwargs: Any) -> None:  # pragma: no cover - never constructed
        raise NotImplementedError

    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:  # pragma: no cover
        raise NotImplementedError


class MissingSweeper(Sweeper):
    """Stands in for a sweeper plugin that is not installed; instantiating it raises the fix."""

    def __init__(self, **options: Any) -> None:
        _fail(options)

    def setup(self, **kwargs: Any) -> None:  # pragma: no cover - never constructed
        raise NotImplementedError

    def sweep(self, arguments: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


def register_missing_plugins(is_installed: Any = None) -> list[tuple[str, str]]:
    """Store a stand-in for every optional plugin that ``is_installed(module)`` says is absent."""
    if is_installed is None:

        def is_installed(module: str) -> bool:
            return importlib.util.find_spec(f"hydra_plugins.{module}") is not None

    stand_ins = {"hydra/launcher": MissingLauncher, "hydra/sweeper": MissingSweeper}
    registered = []
    for (group, option), (module, distribution) in OPTIONAL_PLUGINS.items():
        if is_installed(module):
            continue
        cls = stand_ins[group]
        node = {
            "_target_": f"{cls.__module__}.{cls.__qualname__}",
            "group": group,
            "option": option,
            "distribution": distribution,
        }
        ConfigStore.instance().store(group=group, name=option, node=node, provider="gdlab")
        registered.append((group, option))
    return registered


def _run_dir(root: str, stamp: str, overrides: str, resume: Any, ckpt_path: Any) -> str:
    from gdlab.runs.resume import run_dir

    return run_dir(str(root), str(stamp), str(overrides), resume, ckpt_path)


def _root(root: str) -> str:
    from gdlab.runs.resume import checked_root

    return checked_root(str(root))


def _job_name(base: str) -> str:
    from gdlab.runs.torchrun import job_name

    return job_name(str(base))


def _label(overrides: str) -> str:
    from gdlab.runs.resume import label

    return label(str(overrides))


def _output_subdir(resume: Any, ckpt_path: Any) -> str | None:
    from gdlab.runs.resume import resuming

    return None if resuming(resume, ckpt_path) else ".hydra"


def _run_name(output_dir: str) -> str:
    from gdlab.runs.hparams import run_name

    return run_name(str(output_dir))


def _lr(regime: Any, data: Any) -> float:
    """``optimizer.lr`` from a learning-rate regime (``0.5c``, ``optimal``, a rate) and the data's spectrum."""
    from hydra.utils import instantiate

    from gdlab.lessons.lr_regimes import learning_rate

    return learning_rate(regime, instantiate(data).closed_form())


register_missing_plugins()
for _name, _resolver in (
    ("gdlab_run_dir", _run_dir),
    ("gdlab_label", _label),
    ("gdlab_root", _root),
    ("gdlab_job_name", _job_name),
    ("gdlab_output_subdir", _output_subdir),
    ("gdlab_lr", _lr),
    ("gdlab_run_name", _run_name),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver, use_cache=_name == "gdlab_run_dir")
