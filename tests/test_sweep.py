"""The sweep summary from job directories laid out as Hydra writes them (no training needed)."""

import csv
import json
import statistics
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from gdlab.runs.sweep import markdown_table, summarize, summary_figure, summary_title, write_summary
from tests.conftest import REPO_ROOT, child_env

# (overrides, metrics.json record) of a 3 lr x 2 seed sweep where lr=1.0 diverged for one seed
JOBS = [
    (
        ["optimizer.lr=0.01", "seed=0"],
        {"status": "completed", "train/loss": 2.0, "val/loss": 2.5, "test/loss": 2.6},
    ),
    (
        ["optimizer.lr=0.01", "seed=1"],
        {"status": "completed", "train/loss": 3.0, "val/loss": 3.5, "test/loss": 3.4},
    ),
    (
        ["optimizer.lr=1e-1", "seed=0"],
        {"status": "completed", "train/loss": 0.1, "val/loss": 0.2, "test/loss": 0.3},
    ),
    (
        ["optimizer.lr=1e-1", "seed=1"],
        {"status": "completed", "train/loss": 0.3, "val/loss": 0.4, "test/loss": 0.5},
    ),
    (
        ["optimizer.lr=1.0", "seed=0"],
        {"status": "completed", "train/loss": 0.9, "val/loss": 1.0, "test/loss": 1.1},
    ),
    (
        ["optimizer.lr=1.0", "seed=1"],
        {"status": "diverged", "train/loss": "inf", "error": "loss is inf at step 3"},
    ),
]


def make_sweep(root, jobs=JOBS, fixed=("trainer.max_epochs=2", "paths.root=/somewhere")):
    sweep = root / "sweep"
    for num, (overrides, record) in enumerate(jobs):
        job = sweep / f"{num}_{','.join(overrides)}"
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create([*overrides, *fixed]), job / ".hydra" / "overrides.yaml")
        (job / "metrics.json").write_text(json.dumps(record))
    return sweep


def test_one_row_per_configuration_with_seeds_folded(tmp_path):
    summary = summarize(make_sweep(tmp_path))
    assert summary.keys == ["optimizer.lr"]  # seed folded; paths.root and constant keys are not columns
    assert summary.fixed == {"trainer.max_epochs": "2"}
    assert [r["optimizer.lr"] for r in summary.rows] == ["0.01", "1e-1", "1.0"]  # numeric order
    low, mid, high = summary.rows
    assert low["seeds"] == "0,1" and low["n"] == 2 and low["status"] == "completed 2"
    assert low["val/loss mean"] == pytest.approx(3.0)
    assert low["val/loss std"] == pytest.approx(statistics.stdev([2.5, 3.5]))
    assert mid["test/loss mean"] == pytest.approx(0.4)
    # the diverged seed is counted and named in the status, and left out of the mean
    assert high["status"] == "completed 1, diverged 1"
    assert high["train/loss mean"] == pytest.approx(0.9) and high["train/loss std"] == 0.0
    assert [j.status for j in summary.failed_jobs] == ["diverged"]


def test_summary_files_csv_markdown_png(tmp_path):
    sweep = make_sweep(tmp_path)
    write_summary(sweep)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["optimizer.lr"] for r in rows] == ["0.01", "1e-1", "1.0"]
    assert float(rows[0]["val/loss mean"]) == pytest.approx(3.0)
    assert rows[2]["status"] == "completed 1, diverged 1"
    md = (sweep / "summary.md").read_text()
    assert "| optimizer.lr | seeds | status | train/loss | val/loss | test/loss |" in md
    assert "| 0.01 | 0,1 | completed 2 | 2.5 ± 0.7071 | 3 ± 0.7071 | 3 ± 0.5657 |" in md
    assert "diverged: loss is inf at step 3" in md  # the failed job and its error line
    png = (sweep / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_the_plot_says_what_a_point_is_and_marks_incomplete_runs_inside_the_axes(tmp_path):
    summary = summarize(make_sweep(tmp_path))
    assert "mean ± std over 2 seeds" in summary_title(summary)
    assert summary_title(summary).endswith("1 of 3 configurations did not complete (x)")
    fig = summary_figure(summary)
    for ax in fig.axes:
        (mark,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
        assert list(mark.get_xdata()) == [1.0] and 0 < mark.get_ydata()[0] < 1  # axes fraction: visible
        _, top = ax.get_ylim()
        assert top < 100  # the line of completed configurations sets the scale
    one_seed = [(o[:1], r) for o, r in JOBS if o[1] == "seed=0"]
    title = summary_title(summarize(make_sweep(tmp_path / "one", one_seed)))
    assert "one run per point" in title and "seeds" not in title and "did not complete" not in title


def test_several_swept_keys_and_missing_metrics(tmp_path):
    jobs = [
        (["model=linear", "optimizer.lr=0.1"], {"status": "completed", "val/loss": 1.0}),
        (["model=mlp", "optimizer.lr=0.1"], {"status": "completed", "val/loss": 0.5}),
        (["model=mlp", "optimizer.lr=0.2"], {"status": "failed", "error": "ConfigError: bad"}),
    ]
    sweep = make_sweep(tmp_path, jobs, fixed=())
    (sweep / "3_killed" / ".hydra").mkdir(parents=True)  # a job killed before it wrote metrics.json
    OmegaConf.save(
        OmegaConf.create(["model=mlp", "optimizer.lr=0.3"]), sweep / "3_killed/.hydra/overrides.yaml"
    )
    summary = write_summary(sweep)
    assert summary.keys == ["model", "optimizer.lr"]
    assert [(r["model"], r["optimizer.lr"], r["status"]) for r in summary.rows] == [
        ("linear", "0.1", "completed 1"),
        ("mlp", "0.1", "completed 1"),
        ("mlp", "0.2", "failed 1"),
        ("mlp", "0.3", "missing 1"),
    ]
    assert "| mlp | 0.2 | - | failed 1 | - |" in markdown_table(summary)
    assert (sweep / "summary.png").is_file()


def test_script_rebuilds_the_summary_and_reports_failures(tmp_path):
    sweep = make_sweep(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "summarize_sweep.py"),
            str(sweep),
            "--metrics",
            "val/loss",
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # one job diverged
    assert "| optimizer.lr | seeds | status | val/loss |" in proc.stdout
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.png").is_file()
    missing = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "summarize_sweep.py"), str(tmp_path / "nope")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def test_debug_runs_are_marked_and_never_taken_for_results(tmp_path):
    """A `-m ... debug=fdr` job (one batch of each split) completes, but its numbers are no result."""
    jobs = [
        (["optimizer.lr=0.1"], {"status": "completed", "val/loss": 5.0, "debug": "fast_dev_run"}),
        (["optimizer.lr=0.2"], {"status": "completed", "val/loss": 7.0, "debug": "fast_dev_run"}),
    ]
    summary = summarize(make_sweep(tmp_path, jobs))
    assert [r["status"] for r in summary.rows] == ["debug 1", "debug 1"]
    assert all(r["val/loss mean"] is None for r in summary.rows)
    assert summary.failed_jobs == []  # a smoke test of a sweep still exits 0
    assert "2 debug runs (fast_dev_run): not results" in summary_title(summary)
    assert "did not complete" not in summary_title(summary)


def test_a_fast_dev_run_is_recorded_as_debug(tmp_path):
    from gdlab.train import train
    from tests.conftest import make_cfg

    record = train(make_cfg(tmp_path, "debug=fdr", "logger=none", "trainer=cpu"))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == on_disk["status"] == "completed" and on_disk["debug"] == "fast_dev_run"
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # so resume=last never picks it


def test_early_stopped_jobs_are_results_not_failures(tmp_path):
    jobs = [
        (["optimizer=sgd"], {"status": "completed", "val/loss": 1.0}),
        (
            ["optimizer=adam"],
            {"status": "stopped_early", "val/loss": 0.5, "reason": "early stopping after 3"},
        ),
    ]
    summary = summarize(make_sweep(tmp_path, jobs))
    assert [(r["optimizer"], r["status"], r["val/loss mean"]) for r in summary.rows] == [
        ("adam", "stopped_early 1", 0.5),
        ("sgd", "completed 1", 1.0),
    ]
    assert summary.failed_jobs == []  # the sweep exits 0
    assert "did not complete" not in summary_title(summary)
    fig = summary_figure(summary)
    assert not [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "x"]


@pytest.mark.parametrize(
    ("sweeper", "exits"),
    [
        ("hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", False),  # a search: a result
        ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper", True),  # a grid: did not complete
        ("hydra_plugins.gdlab_plugins.vectorized_launcher.GdlabSweeper", True),
        (None, True),  # no sweeper named: no search
        ("no_such_package.Sweeper", True),  # one that cannot be imported ran no search either
    ],
)
def test_a_search_counts_a_diverged_trial_as_a_result(tmp_path, capsys, sweeper, exits):
    """optuna over lr up to 1.0 is meant to find where training diverges: the search exits 0 and its summary
    still names the diverged trial; a grid sweep of the same jobs exits 1, and a failed trial fails both."""
    if sweeper and not sweeper.startswith("no_such"):
        pytest.importorskip(sweeper.rpartition(".")[0])
    from gdlab.runs.sweep import SweepSummary

    sweep = make_sweep(tmp_path)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "sweeper": {"_target_": sweeper}}})
    callback = SweepSummary()
    if exits:
        with pytest.raises(SystemExit):
            callback.on_multirun_end(config)
        assert "1 of 6 sweep jobs did not complete (1 diverged)" in capsys.readouterr().err
    else:
        callback.on_multirun_end(config)
        assert "error:" not in capsys.readouterr().err
    assert "diverged: loss is inf at step 3" in (sweep / "summary.md").read_text()
    failed = [*JOBS, (["optimizer.lr=-1", "seed=0"], {"status": "failed", "error": "optimizer.lr=-1: ..."})]
    config.hydra.sweep.dir = str(make_sweep(tmp_path / "failed", failed))
    with pytest.raises(SystemExit):
        callback.on_multirun_end(config)
    assert "sweep jobs did not complete" in capsys.readouterr().err
