"""Multirun sweeps: keep going when a job fails, then summarise the sweep directory.

The summary has one row per distinct configuration (the job overrides other than ``seed``), with
the seeds folded into mean +- std of the final metrics, as ``summary.csv``, ``summary.md`` and a
``summary.png`` plot of the final losses against the swept parameter. :class:`SweepSummary` (a Hydra
callback, wired in ``conf/hydra/default.yaml``) writes it when a multirun ends and makes the command
exit non-zero when a job did not complete; ``scripts/summarize_sweep.py`` rebuilds it later.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gdlab.errors import exit_with
from gdlab.runs.record import METRICS_FILE, RESULT_STATUSES, STOPPED_NOTE, record_stopped

log = logging.getLogger(__name__)

SEED_KEY = "seed"
# Keys that say where a job writes, not what it computes: never columns of the summary.
PLACE_KEYS = (
    "paths.root",
    "paths.output_dir",
    "paths.data_dir",
    "ckpt_path",
    "resume",
    "verbose",
    "print_config",
)
LOSS_METRICS = ("train/loss", "val/loss", "test/loss")
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")


def _parse_value(text: str) -> Any:
    """An override value as a number where it is one (``1e-3`` included), else the text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclass
class Job:
    """One job directory of a sweep: its overrides (``key -> value text``) and its metrics.json."""

    path: Path
    overrides: dict[str, str]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """How the job ended; ``debug`` for a completed ``debug=fdr`` job (one batch: no result)."""
        status = str(self.record.get("status", "missing"))
        return "debug" if status == "completed" and self.record.get("debug") else status


def load_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job under ``sweep_dir``: a directory with ``.hydra/overrides.yaml`` or ``metrics.json``.

    A job without metrics.json (killed before it started) has status ``missing``.
    """
    from omegaconf import OmegaConf

    jobs = []

    def job_number(path: Path) -> tuple[int, str]:
        num = path.name.split("_")[0]
        return (int(num) if num.isdigit() else sys.maxsize, path.name)

    for path in sorted(Path(sweep_dir).iterdir(), key=job_number):
        overrides_file = path / ".hydra" / "overrides.yaml"
        metrics_file = path / METRICS_FILE
        if not path.is_dir() or not (overrides_file.is_file() or metrics_file.is_file()):
            continue
        overrides: dict[str, str] = {}
        if overrides_file.is_file():
            for item in OmegaConf.load(overrides_file) or []:
                key, _, value = str(item).partition("=")
                overrides[key.lstrip("+~")] = value
        record = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        jobs.append(Job(path, overrides, record))
    return jobs


def metric_order(metrics: Iterable[str]) -> list[str]:
    """train/val/test losses first, then the other ``train/``, ``val/`` and ``test/`` metrics by split."""
    splits = {"train": 0, "val": 1, "test": 2}
    rest = sorted(
        (m for m in set(metrics) if m not in LOSS_METRICS), key=lambda m: (splits[m.split("/")[0]], m)
    )
    return [m for m in LOSS_METRICS if m in metrics] + rest


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # non-finite values are stored as the strings "nan" / "inf"
    return float(value) if math.isfinite(value) else None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _sort_key(text: str) -> tuple[int, Any]:
    value = _parse_value(text)
    return (0, value) if isinstance(value, (int, float)) else (1, text)


@dataclass
class Summary:
    """Rows of a sweep summary: one per distinct configuration, seeds folded."""

    sweep_dir: Path
    keys: list[str]  # the overrides that differ between configurations (the table's first columns)
    fixed: dict[str, str]  # overrides shared by every job
    metrics: list[str]
    rows: list[dict[str, Any]]
    jobs: list[Job]

    @property
    def failed_jobs(self) -> list[Job]:
        return [j for j in self.jobs if j.status not in (*RESULT_STATUSES, "debug")]


def summarize(sweep_dir: str | Path, metrics: Iterable[str] | None = None) -> Summary:
    """Group the jobs of ``sweep_dir`` by their overrides (``seed`` folded) and average their metrics.

    ``metrics`` defaults to every ``train/``, ``val/`` and ``test/`` key found, losses first. Means and
    sample standard deviations are over the seeds whose value is finite; ``n`` counts all seeds and
    ``status`` counts how each ended (e.g. ``completed 2, diverged 1``).
    """
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    all_keys: list[str] = []
    for job in jobs:
        all_keys += [k for k in job.overrides if k not in all_keys and k not in PLACE_KEYS]
    config_keys = [k for k in all_keys if k != SEED_KEY]
    keys = [k for k in config_keys if len({j.overrides.get(k) for j in jobs}) > 1]
    fixed = {k: jobs[0].overrides[k] for k in config_keys if k not in keys and k in jobs[0].overrides}
    if metrics is None:
        found = {k for j in jobs for k in j.record if k.split("/")[0] in ("train", "val", "test")}
        metrics = metric_order(found)
    metrics = list(metrics)

    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in keys), []).append(job)
    rows = []
    for values in sorted(groups, key=lambda vs: [_sort_key(v) for v in vs]):
        members = groups[values]
        counts: dict[str, int] = {}
        for job in members:
            counts[job.status] = counts.get(job.status, 0) + 1
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        row["seeds"] = ",".join(j.overrides.get(SEED_KEY, "") for j in members).strip(",")
        row["n"] = len(members)
        row["status"] = ", ".join(f"{s} {c}" for s, c in sorted(counts.items()))
        for metric in metrics:
            results = [j for j in members if j.status != "debug"]
            finite = [v for v in (_finite(j.record.get(metric)) for j in results) if v is not None]
            row[f"{metric} mean"], row[f"{metric} std"] = _mean_std(finite)
        rows.append(row)
    return Summary(sweep_dir, keys, fixed, metrics, rows, jobs)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def write_csv(summary: Summary, path: Path) -> Path:
    columns = [*summary.keys, "seeds", "n", "status"]
    columns += [f"{m} {s}" for m in summary.metrics for s in ("mean", "std")]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in summary.rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return path


def markdown_table(summary: Summary) -> str:
    """The summary as a Markdown table (metrics as ``mean ± std`` over seeds)."""
    header = [*summary.keys, "seeds", "status", *summary.metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in summary.rows:
        cells = [str(row[k]) for k in summary.keys] + [row["seeds"] or "-", row["status"]]
        for m in summary.metrics:
            mean, std = row[f"{m} mean"], row[f"{m} std"]
            cells.append("-" if mean is None else _fmt(mean) + (f" ± {_fmt(std)}" if row["n"] > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(summary: Summary, path: Path) -> Path:
    fixed = ", ".join(f"`{k}={v}`" for k, v in summary.fixed.items()) or "none"
    failed = summary.failed_jobs
    text = [
        f"# Sweep summary: {summary.sweep_dir.name}",
        "",
        f"{len(summary.jobs)} jobs, {len(summary.rows)} configurations; fixed overrides: {fixed}.",
        "Metrics are final values, mean ± sample std over seeds (non-finite values left out).",
        "",
        markdown_table(summary),
        "",
    ]
    if failed:
        text += ["Jobs that did not complete:", ""]
        text += [f"- `{j.path.name}`: {j.status}: {j.record.get('error', '')}".rstrip(": ") for j in failed]
        text.append("")
    path.write_text("\n".join(text))
    return path


def is_lr(key: str | None) -> bool:
    return key is not None and key.split(".")[-1] in ("lr", "learning_rate")


def _x_key(summary: Summary) -> str | None:
    """The swept parameter on the plot's x axis: a numeric one, a learning rate first."""
    numeric = [
        k for k in summary.keys if all(isinstance(_parse_value(r[k]), (int, float)) for r in summary.rows)
    ]
    for key in numeric:
        if is_lr(key):
            return key
    return (numeric or summary.keys or [None])[0]


def _seeds_note(summary: Summary) -> str:
    """What a point of the plot is: one run, or a mean ± std over how many seeds."""
    counts = sorted({int(r["n"]) for r in summary.rows})
    if counts == [1]:
        return "one run per point"
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean ± std over {seeds} seeds"


def _completed(row: dict[str, Any]) -> bool:
    """Every seed of the configuration is a result (completed, or ended by early stopping)."""
    counts = dict(part.rsplit(" ", 1) for part in row["status"].split(", "))
    return sum(int(counts.get(s, 0)) for s in RESULT_STATUSES) == row["n"]


def _debug(row: dict[str, Any]) -> bool:
    """Only debug=fdr jobs: nothing to draw, nothing that failed."""
    return row["status"] == f"debug {row['n']}"


def summary_title(summary: Summary) -> str:
    """The plot's title: the sweep, what a point is (one run or a mean over seeds), what did not complete."""
    title = f"{summary.sweep_dir.name}: final losses, {_seeds_note(summary)}"
    incomplete = [r for r in summary.rows if not _completed(r) and not _debug(r)]
    if incomplete:
        title += f"; {len(incomplete)} of {len(summary.rows)} configurations did not complete (x)"
    debug = [r for r in summary.rows if _debug(r)]
    if debug:
        title += f"; {len(debug)} debug runs (fast_dev_run): not results, not drawn"
    return title


def plot_summary(summary: Summary, path: Path, metrics: Sequence[str] = LOSS_METRICS) -> Path | None:
    """Draw :func:`summary_figure` into ``path`` (None when there is nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig = summary_figure(summary, metrics)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_figure(summary: Summary, metrics: Sequence[str] = LOSS_METRICS) -> Any:
    """Final losses (mean ± std over seeds) against the swept parameter, one line per setting of the
    other swept keys; log x for learning rates. The lines join configurations whose every seed completed;
    one where a seed diverged or failed is an ``x`` inside the top of the axes (its values would set the
    scale), labelled in the legend. A matplotlib Figure, or None when there is nothing to plot."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    metrics = [m for m in metrics if m in summary.metrics]
    x_key = _x_key(summary)
    if not metrics or not summary.rows:
        return None
    series_keys = [k for k in summary.keys if k != x_key]
    categorical = x_key is None or not all(
        isinstance(_parse_value(r[x_key]), (int, float)) for r in summary.rows
    )
    categories = sorted({r[x_key] for r in summary.rows}, key=_sort_key) if x_key else [""]

    def x_of(row: dict[str, Any]) -> float:
        if x_key is None:
            return 0.0
        return float(categories.index(row[x_key])) if categorical else float(_parse_value(row[x_key]))

    log_x = not categorical and is_lr(x_key) and all(x_of(r) > 0 for r in summary.rows)
    incomplete = [r for r in summary.rows if not _completed(r) and not _debug(r)]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False, layout="constrained"
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        series: dict[str, list[dict[str, Any]]] = {}
        for row in summary.rows:
            label = ", ".join(f"{k}={row[k]}" for k in series_keys) or metric
            series.setdefault(label, []).append(row)
        for label, rows in series.items():
            rows = sorted(rows, key=x_of)
            ok = [r for r in rows if _completed(r) and r[f"{metric} mean"] is not None]
            line = ax.errorbar(
                [x_of(r) for r in ok],
                [r[f"{metric} mean"] for r in ok],
                yerr=[r[f"{metric} std"] for r in ok],
                marker="o",
                capsize=3,
                label=label,
            )
            bad = [x_of(r) for r in rows if not _completed(r) and not _debug(r)]
            if bad:  # inside the axes, just below the top edge: never clipped, never setting the scale
                style = {"ms": 9, "mew": 2, "color": line[0].get_color()}
                ax.plot(bad, [0.93] * len(bad), "x", transform=ax.get_xaxis_transform(), **style)
        values = [
            r[f"{metric} mean"] for r in summary.rows if _completed(r) and r[f"{metric} mean"] is not None
        ]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.margins(y=0.15)  # room under the x marks
        if categorical:
            ax.set_xticks(range(len(categories)), categories)
        elif log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x_key or "")
        ax.set_ylabel(f"final {metric}")
        ax.grid(True, which="both", alpha=0.3)
    handles, _ = axes[0][0].get_legend_handles_labels()
    if incomplete:
        handles.append(Line2D([], [], ls="", marker="x", ms=8, mew=2, color="0.3", label="did not complete"))
    if len(series) > 1 or incomplete:
        axes[0][0].legend(handles=handles, fontsize=7)
    fig.suptitle(summary_title(summary), fontsize=9)
    return fig


def write_summary(sweep_dir: str | Path, metrics: Iterable[str] | None = None) -> Summary:
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` into ``sweep_dir``; return the summary."""
    summary = summarize(sweep_dir, metrics)
    if not summary.jobs:
        return summary
    write_csv(summary, summary.sweep_dir / "summary.csv")
    write_markdown(summary, summary.sweep_dir / "summary.md")
    plot_summary(summary, summary.sweep_dir / "summary.png")
    return summary


# The sweep this process is running (set when it starts), for :func:`close_interrupted` after Ctrl+C.
_running_sweep: list[Path] = []


def close_interrupted() -> Path | None:
    """After Ctrl+C ended a sweep: a job still recorded as ``running`` was stopped before it could say so
    (a launcher's worker ends with the command), so it is recorded as ``interrupted``; then the summary
    of the jobs so far is written. Returns summary.md's path (None outside a sweep, or before any job)."""
    if not _running_sweep or not _running_sweep[-1].is_dir():
        return None
    sweep_dir = _running_sweep.pop()
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        record_stopped(job_dir, STOPPED_NOTE)
    summary = write_summary(sweep_dir)
    return sweep_dir / "summary.md" if summary.jobs else None


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, write the summary into the sweep directory, and end the
    command with exit status 1 and one line when a job did not complete (``fail_on_incomplete: false``
    turns that off). A sweep ended by Ctrl+C gets its summary from :func:`close_interrupted`.

    Hydra turns an ``Exception`` raised by a callback into a warning: the command ends here, as the last
    callback of the multirun (:func:`gdlab.errors.exit_with`)."""

    def __init__(self, fail_on_incomplete: bool = True) -> None:
        self.fail_on_incomplete = fail_on_incomplete

    @staticmethod
    def results(config: DictConfig) -> tuple[str, ...]:
        """The statuses that count as a result of this sweep: a search (optuna, ...) that explores the
        learning rate is meant to find where training diverges, so there a diverged trial is one too."""
        from gdlab.integrations.hydra_sweeper import is_search

        return ("diverged",) if is_search(config.hydra.sweeper.get("_target_")) else ()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _running_sweep[:] = [Path(config.hydra.sweep.dir)]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _running_sweep.clear()  # a later command in this process (a test, a notebook) runs no sweep
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = write_summary(sweep_dir)
        if not summary.jobs:
            return
        log.info("sweep summary: %s\n%s", sweep_dir / "summary.md", markdown_table(summary))
        log.info(
            "in TensorBoard: tensorboard --logdir %s, then http://localhost:6006/#custom_scalars (the losses) "
            "and #hparams (one row per job)",
            sweep_dir,
        )
        results = self.results(config)
        diverged = [job for job in summary.failed_jobs if job.status in results]
        if diverged:
            log.info(
                "%d of %d trials diverged (a result of the search): see %s",
                len(diverged),
                len(summary.jobs),
                sweep_dir / "summary.md",
            )
        failed = [job for job in summary.failed_jobs if job.status not in results]
        if failed and self.fail_on_incomplete:
            counts: dict[str, int] = {}
            for job in failed:
                counts[job.status] = counts.get(job.status, 0) + 1
            how = ", ".join(f"{c} {s}" for s, c in sorted(counts.items()))
            exit_with(
                f"{len(failed)} of {len(summary.jobs)} sweep jobs did not complete ({how}); "
                f"see {sweep_dir / 'summary.md'}",
                hint=False,
            )
