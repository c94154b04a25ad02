"""The vectorized launcher's work: group the jobs, train each stacked group with one Trainer, run every
other job as Hydra's basic launcher runs it, and hand Hydra one ``JobReturn`` per job, in order."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, open_dict, read_write

from gdlab.errors import describe
from gdlab.runs.record import METRICS_FILE, write_metrics
from gdlab.vectorized.grouping import Group, Job, group_jobs, parse
from gdlab.vectorized.members import Member, as_current, group_logging, member_of, write_hydra_record

log = logging.getLogger(__name__)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """``Launcher.launch`` of :class:`hydra_plugins.gdlab_plugins.vectorized_launcher.VectorizedLauncher`."""
    setup_globals()
    config: DictConfig = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    loader = launcher.hydra_context.config_loader
    groups_of_config = list(config.hydra.runtime.choices)
    jobs = parse(job_overrides, initial_job_idx)
    log.info(f"Launching {len(jobs)} jobs locally, vectorized")
    for job in jobs:
        log.info(f"\t#{job.idx} : {' '.join(filter_overrides(job.overrides))}")

    def compose(job: Job) -> DictConfig:
        return loader.load_sweep_config(config, list(job.overrides))

    groups = split(group_jobs(jobs, compose, groups_of_config), launcher.max_members)
    returns: dict[int, JobReturn] = {}
    for group in groups:
        for job in group.jobs:
            with read_write(job.config), open_dict(job.config):
                job.config.hydra.job.id = job.idx
                job.config.hydra.job.num = job.idx
        returns.update(run_group(launcher, group))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [returns[job.idx] for job in jobs]


def split(groups: list[Group], max_members: int | None) -> list[Group]:
    """Groups of at most ``max_members`` jobs (consecutive pieces of each)."""
    if not max_members:
        return groups
    return [Group(g.jobs[i : i + max_members]) for g in groups for i in range(0, len(g.jobs), max_members)]


def run_group(launcher: Any, group: Group) -> dict[int, JobReturn]:
    """Train ``group`` stacked, or job by job (``run_job``, as the basic launcher) when it cannot be."""
    from gdlab.vectorized.train import why_not_stacked

    first = group.jobs[0]
    reason = why_not_stacked(_task_part(first.config), len(group.jobs))
    if reason is None:
        members = [member_of(job) for job in group.jobs]
        try:
            return run_stacked(launcher, members)
        except _Fallback as fallback:
            reason = str(fallback)
    if len(group.jobs) > 1:
        log.info("%d jobs one after another (%s)", len(group.jobs), reason)
    return {job.idx: run_one(launcher, job) for job in group.jobs}


def _task_part(cfg: DictConfig) -> DictConfig:
    """The config without its ``hydra`` node, unresolved, as ``run_job`` hands it to the task."""
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


class _Fallback(Exception):
    """The group cannot train stacked after all; nothing of its jobs was written."""


def run_one(launcher: Any, job: Job) -> JobReturn:
    """One job through the ordinary path, exactly as Hydra's basic launcher runs it."""
    return run_job(
        hydra_context=launcher.hydra_context,
        task_function=launcher.task_function,
        config=job.config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def run_stacked(launcher: Any, members: list[Member]) -> dict[int, JobReturn]:
    """Train the members as one stacked model; each still gets what ``run_job`` gives a job (its
    directory, .hydra record, Hydra's job callbacks, a JobReturn with its optimized metric)."""
    from gdlab.vectorized.memory import MemoryShortage
    from gdlab.vectorized.train import NotStacked, optimized_value, train_group

    callbacks = launcher.hydra_context.callbacks
    for member in members:
        member.output_dir.mkdir(parents=True, exist_ok=True)
    returns: dict[int, JobReturn] = {}
    with group_logging(members):
        for member in members:
            write_hydra_record(member)
            with as_current(member.job):
                callbacks.on_job_start(config=member.job.config, task_function=launcher.task_function)
        try:
            records = train_group(members, launcher.pictures, launcher.max_memory_gb)
        except NotStacked as err:
            raise _Fallback(str(err)) from err
        except MemoryShortage:
            raise  # the sweep as asked cannot run: one line, before anything is allocated
        except Exception as err:  # the whole group failed: each job failed, the sweep goes on
            line = describe(err)
            log.error("jobs failed: %s", line, exc_info=err if members[0].cfg.get("verbose") else None)
            records = [{"status": "failed", "error": line} for _ in members]
            for member in members:
                if not (member.output_dir / METRICS_FILE).is_file():  # it failed before its run began
                    write_metrics(member.output_dir, {}, "failed", error=line)
        for member, record in zip(members, records, strict=True):
            ret = JobReturn(
                overrides=member.overrides,
                cfg=_task_part(member.job.config),
                hydra_cfg=member.job.config,
                working_dir=os.getcwd(),
                task_name=str(member.job.config.hydra.job.name),
                status=JobStatus.COMPLETED,
            )
            ret.return_value = optimized_value(record, member.cfg)
            with as_current(member.job):
                callbacks.on_job_end(config=member.job.config, job_return=ret)
            returns[member.job.idx] = ret
    return returns
