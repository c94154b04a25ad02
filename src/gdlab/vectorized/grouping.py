"""Which jobs of a sweep train together, and each job's config.

Hydra composes one job's config in about 0.2 s here, far more than a small model's training step, so
only each group's first job is composed through Hydra's config loader. Another job whose overrides set
values (``key=value``, no config group, no ``+``/``~``) is derived from it: a copy with those values set,
its own ``hydra.overrides.task`` and ``hydra.job.override_dirname``, exactly what Hydra would compose
(``tests/test_vectorized_grouping.py`` compares them). Interpolations follow, so ``seed=3`` also moves
``data.shuffle_seed: ${seed}``, and ``lr_regime=0.5c`` the learning rate it resolves to.

It joins the group when its resolved config differs from the first job's only in keys the stacked step
batches (:data:`BATCHED_KEYS`) or in top-level keys training never reads itself (``lr_regime``, which only
feeds ``optimizer.lr``). Any other difference, a config group, a ``+`` or ``~``: a group of its own, so a
key the launcher cannot batch never changes results.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# Settings the stacked model gives each member its own value of: the seed (initial weights; with it the
# shuffle order, data.shuffle_seed) and the step rule's numbers (gdlab.vectorized.step).
BATCHED_KEYS = (
    "seed",
    "data.shuffle_seed",
    "optimizer.lr",
    "optimizer.momentum",
    "optimizer.dampening",
    "optimizer.weight_decay",
)
# Top-level settings the training task reads itself (gdlab.train): a difference there is not batched.
TASK_KEYS = ("seed", "log_flush_steps", "optimized_metric", "ckpt_path", "resume", "print_config", "verbose")
# Where a job writes: different for every job by design.
PLACE_KEYS = ("paths.output_dir",)


@dataclass
class Job:
    """One job of the sweep: its number, its overrides as the sweeper gave them, and, once composed or
    derived, its full config (the ``hydra`` node included, as Hydra's launchers hand it to ``run_job``)."""

    idx: int
    overrides: list[str]
    parsed: list[Override] = field(default_factory=list)
    config: DictConfig | None = None

    @property
    def task_overrides(self) -> list[str]:
        """What Hydra records as ``hydra.overrides.task``: the overrides that are not ``hydra.*``."""
        return [o.input_line for o in self.parsed if not o.is_hydra_override()]


@dataclass
class Group:
    """Jobs whose configs differ only in batched keys; ``jobs[0]``'s config was composed by Hydra."""

    jobs: list[Job]


def parse(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Job]:
    """The sweep's jobs with their overrides parsed by Hydra's own override parser."""
    parser = OverridesParser.create()
    return [
        Job(initial_job_idx + i, list(overrides), parser.parse_overrides(list(overrides)))
        for i, overrides in enumerate(job_overrides)
    ]


def sets_value(override: Override, groups: Sequence[str]) -> bool:
    """``key=value`` on a key of the config (not a config group, not ``+``/``~``/``++``, not ``hydra.*``)."""
    key = override.key_or_group
    return (
        override.type == OverrideType.CHANGE
        and override.value_type == ValueType.ELEMENT
        and override.package is None
        and not override.is_hydra_override()
        and "/" not in key
        and key not in groups
    )


def signature(job: Job, groups: Sequence[str]) -> tuple[Any, ...]:
    """Jobs can only share a group when they have the same structural overrides and set the same keys."""
    structural = sorted(o.input_line for o in job.parsed if not sets_value(o, groups))
    keys = sorted(o.key_or_group for o in job.parsed if sets_value(o, groups))
    return tuple(structural), tuple(keys)


def overrides_dirname(overrides: Sequence[Override], cfg: DictConfig) -> str:
    """``hydra.job.override_dirname`` as Hydra computes it from the job's task overrides."""
    options = cfg.hydra.job.config.override_dirname
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in options.exclude_keys)
    return re.sub("[=]", options.kv_sep, options.item_sep.join(lines))


def derive(base: DictConfig, job: Job, groups: Sequence[str]) -> DictConfig:
    """``job``'s config from its group's first ``base``: the value overrides set on a copy, and Hydra's
    record of the job's overrides. A key that does not exist raises (Hydra's compose then says why)."""
    cfg = copy.deepcopy(base)  # the resolver cache too (run times, as Hydra copies it to each job)
    with read_write(cfg):
        for override in job.parsed:
            if sets_value(override, groups):
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        task = [o for o in job.parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        cfg.hydra.job.override_dirname = overrides_dirname(task, cfg)
    return cfg


def resolved_task(cfg: DictConfig) -> dict[str, Any]:
    """The job's config without ``hydra``, resolved, the run directory left out (it is every job's own)."""
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
        if isinstance(task.get("paths"), DictConfig) and "output_dir" in task.paths:
            task.paths.output_dir = "."
    return OmegaConf.to_container(task, resolve=True)


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two resolved configs (lists compare whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                found.append(name)
            else:
                found += differences(a[key], b[key], name)
        return found
    return [] if a == b and type(a) is type(b) else [prefix]


def unbatched(base: dict[str, Any], other: dict[str, Any], groups: Sequence[str]) -> list[str]:
    """The differences between two jobs' resolved configs that the stacked model cannot batch."""

    def inert(key: str) -> bool:  # a top-level value training never reads itself (it may feed others)
        return "." not in key and key not in TASK_KEYS and key not in groups

    return [
        k for k in differences(base, other) if k not in BATCHED_KEYS and k not in PLACE_KEYS and not inert(k)
    ]


def group_jobs(jobs: list[Job], compose: Callable[[Job], DictConfig], groups: Sequence[str]) -> list[Group]:
    """Sort the jobs into groups (in the order of their first job). ``compose(job)`` is Hydra's full
    composition, called once per group; the other members are derived (:func:`derive`)."""
    buckets: dict[tuple[Any, ...], list[tuple[Group, dict[str, Any] | None]]] = {}
    found: list[Group] = []
    for job in jobs:
        candidates = buckets.setdefault(signature(job, groups), [])
        for group, resolved in candidates:
            if resolved is None:
                continue
            try:
                cfg = derive(group.jobs[0].config, job, groups)
                mine = resolved_task(cfg)
            except Exception:  # e.g. a key the config lacks: composing it says why
                continue
            if not unbatched(resolved, mine, groups):
                job.config = cfg
                group.jobs.append(job)
                break
        else:
            job.config = compose(job)
            try:
                resolved = resolved_task(job.config)
            except Exception:  # a value that only resolves inside the run (the task reports it)
                resolved = None
            group = Group([job])
            candidates.append((group, resolved))
            found.append(group)
    return found
