"""Sweeps through hydra/launcher=vectorized, against the basic launcher and as a user sees them: every job
a job (files, eval.py, log lines), divergence, what it cannot stack, bad input, pictures."""

from __future__ import annotations

import json

import pytest
import torch

from gdlab import entry
from tests.conftest import train_in_process
from tests.test_vectorized import _records, assert_same_results, sweep_both

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("precision, rel", [("64-true", 1e-10), ("32-true", 1e-5)])
def test_mlp_full_batch_with_momentum_matches_the_basic_launcher(monkeypatch, tmp_path, precision, rel):
    basic, vectorized = sweep_both(
        monkeypatch,
        tmp_path,
        "data=polynomial",
        "data.degree=1",
        "data.n_samples=300",
        "data.batch_size=null",
        "model=mlp",
        "model.hidden_sizes=[8]",
        "optimizer=momentum",
        "optimizer.lr=0.02,0.05",
        "optimizer.momentum=0.0,0.9",
        "trainer.max_epochs=30",
        f"trainer.precision={precision}",
        "callbacks.pictures=null",
    )
    assert_same_results(basic, vectorized, rel=rel)


@pytest.mark.parametrize("precision, rel", [("64-true", 1e-10), ("32-true", 1e-5)])
def test_cnn_minibatch_matches_the_basic_launcher(monkeypatch, tmp_path, precision, rel):
    basic, vectorized = sweep_both(
        monkeypatch,
        tmp_path,
        "data=digits",
        "model=cnn",
        "model.channels=[4]",
        "model.hidden_size=8",
        "loss=cross_entropy",
        "optimizer.lr=0.05,0.1",
        "seed=0,1",
        "trainer.max_steps=6",
        f"trainer.precision={precision}",
        "callbacks.pictures=null",
    )
    assert_same_results(basic, vectorized, rel=rel)


def test_a_diverging_job_stops_alone_and_the_others_match_their_own_runs(monkeypatch, tmp_path):
    basic, vectorized = sweep_both(
        monkeypatch,
        tmp_path,
        "optimizer.lr=0.1,1.3",
        "seed=0,1",
        "trainer.max_epochs=3",
        "trainer.precision=64-true",
        "callbacks.pictures=null",
        "data.n_samples=300",
        "log_flush_steps=2",
    )
    ours, theirs = _records(vectorized), _records(basic)
    for name, record in ours.items():
        assert record["status"] == theirs[name]["status"], name
        if record["status"] == "diverged":
            assert record["step"] == theirs[name]["step"] and record["error"] == theirs[name]["error"]
            assert (vectorized / "multirun").glob(f"*/{name}/checkpoints/last.ckpt")
    assert {r["status"] for r in ours.values()} == {"completed", "diverged"}
    for name in [n for n, r in theirs.items() if r["status"] == "completed"]:
        assert ours[name]["val/loss"] == pytest.approx(theirs[name]["val/loss"], rel=1e-10)
        assert ours[name]["test/loss"] == pytest.approx(theirs[name]["test/loss"], rel=1e-10)


def test_what_it_cannot_stack_runs_job_by_job_with_the_same_results(monkeypatch, tmp_path, capsys):
    basic, vectorized = sweep_both(
        monkeypatch,
        tmp_path,
        "optimizer=adam",
        "optimizer.lr=0.01,0.1",
        "trainer.max_epochs=1",
        "callbacks.pictures=null",
        "data.n_samples=300",
    )
    out = capsys.readouterr().out
    assert "2 jobs one after another (optimizer=torch.optim.adam.Adam is not one it stacks)" in out
    assert_same_results(basic, vectorized, rel=1e-12)


def test_each_job_is_a_job_files_log_tensorboard_and_eval(monkeypatch, tmp_path, capsys):
    from tests.conftest import scalars

    root = tmp_path / "out"
    code = train_in_process(
        monkeypatch,
        "-m",
        "hydra/launcher=vectorized",
        "experiment=lecture",
        "optimizer.lr=0.1,0.5,0.95",
        "trainer.max_epochs=6",
        "callbacks.pictures.every_n_epochs=3",
        f"paths.root={root}",
    )
    assert code == 0
    jobs = sorted((p for p in next(root.glob("multirun/*")).iterdir() if p.is_dir()), key=lambda p: p.name)
    assert [j.name.split("_optimizer.lr-")[1].split("_")[0] for j in jobs] == ["0.1", "0.5", "0.95"]
    assert [j.name[0] for j in jobs] == ["0", "1", "2"]
    for i, job in enumerate(jobs):
        for name in (
            ".hydra/config.yaml",
            ".hydra/overrides.yaml",
            "config.yaml",
            "train.log",
            "metrics.json",
        ):
            assert (job / name).is_file(), (job, name)
        assert list(job.glob("events.out.tfevents.*")) and (job / "checkpoints" / "last.ckpt").is_file()
        assert list((job / "checkpoints").glob("best-epoch*-step*.ckpt"))
        record = json.loads((job / "metrics.json").read_text())
        assert record["status"] == "completed" and record["step"] == 6 and record["epoch"] == 6
        text = (job / "train.log").read_text()
        assert f"run directory: {job.resolve()}" in text
        others = [j for j in jobs if j != job]
        assert all(f"run directory: {o.resolve()}" not in text for o in others)  # not the others' lines
        assert "training 3 jobs at once (optimizer.lr), one stacked model" in text
        # the same tags as a run of its own, each value at its step
        assert [s for s, _ in scalars(job, "train/loss")] == list(range(6))
        assert scalars(job, "diag/loss_gap") and scalars(job, "val/loss") and scalars(job, "test/loss")
        # pictures: the first job of the group only (hydra.launcher.pictures=first)
        assert (job / "plots" / "landscape_epoch0006.png").is_file() == (i == 0)
    # eval.py loads a job's last.ckpt as a single run and gets the job's test loss
    record = json.loads((jobs[1] / "metrics.json").read_text())
    monkeypatch.setattr(
        "sys.argv", ["eval.py", f"ckpt_path={jobs[1] / 'checkpoints' / 'last.ckpt'}", f"paths.root={root}"]
    )
    entry.eval_main()
    evaluated = json.loads(next(root.glob("eval/*/metrics.json")).read_text())
    # (eval.py runs with its own trainer settings: float32 here, the run trained in float64)
    assert evaluated["test/loss"] == pytest.approx(record["test/loss"], rel=1e-6)
    assert evaluated["step"] == 6


def test_other_members_draw_pictures_when_asked(monkeypatch, tmp_path):
    root = tmp_path / "out"
    code = train_in_process(
        monkeypatch,
        "-m",
        "hydra/launcher=vectorized",
        "hydra.launcher.pictures=[1,2]",
        "experiment=lecture",
        "optimizer.lr=0.1,0.5,0.9",
        "trainer.max_epochs=2",
        "logger=none",
        f"paths.root={root}",
    )
    assert code == 0
    drawn = sorted(p.parent.parent.name[0] for p in root.glob("multirun/*/*/plots/fit_final.png"))
    assert drawn == ["1", "2"]


def test_more_members_than_fit_fail_in_one_line_before_training(monkeypatch, tmp_path, capsys):
    root = tmp_path / "out"
    code = train_in_process(
        monkeypatch,
        "-m",
        "hydra/launcher=vectorized",
        "hydra.launcher.max_memory_gb=0.00002",
        "optimizer.lr=0.1,0.2,0.3",
        f"paths.root={root}",
    )
    assert code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "error: hydra/launcher=vectorized: 3 jobs of this model trained at once need about "
    )
    assert "KiB is there (hydra.launcher.max_memory_gb=2e-05): train at most 1 at once" in line
    assert not list(root.glob("multirun/*/*/metrics.json"))  # nothing trained, nothing recorded


def test_resume_of_a_vectorized_sweep_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    root = tmp_path / "out"
    code = train_in_process(
        monkeypatch,
        "-m",
        "hydra/launcher=vectorized",
        f"resume={tmp_path}",
        "optimizer.lr=0.1,0.2",
        f"paths.root={root}",
    )
    assert code == 1
    assert "resume" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_members_match_their_own_runs(monkeypatch, tmp_path):
    basic, vectorized = sweep_both(
        monkeypatch,
        tmp_path,
        "trainer=gpu",
        "optimizer.lr=0.05,0.2",
        "seed=0,1",
        "trainer.max_epochs=2",
        "trainer.precision=64-true",
        "callbacks.pictures=null",
    )
    assert_same_results(basic, vectorized, rel=1e-10)
