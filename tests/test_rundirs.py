"""Run directories never break: whatever an override value holds, every run and sweep job gets one directory
named after its overrides, the sweep its summary and exit status, and resume=<dir> takes the directory as a
user types it. Runs go through the real entry point (Hydra included), in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from gdlab.runs.resume import label
from tests.conftest import train_in_process

# character class -> an override value as typed on the command line (Hydra's quotes where its grammar needs them)
VALUES = {
    "slash": "a/b/c",
    "equals": "'x=y'",
    "comma": "'p,q'",
    "space": "'two words'",
    "quotes": '"it\'s"',
    "non-ascii": "'über'",
    "long": "'" + "z" * 300 + "'",
}
FAST = ("data.n_samples=100", "trainer.max_epochs=1", "logger=none", "callbacks=minimal", "trainer=cpu")


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_labels_need_no_quoting_anywhere(value):
    text = label(f"+note-{value}_optimizer.lr-0.1")
    assert text.startswith("_") and len(text) <= 121
    assert all(c.isascii() and (c.isalnum() or c in "._+@-") for c in text[1:]), text
    parsed = OverridesParser.create().parse_overrides(
        [f"resume=outputs/runs/2026-01-01_00-00-00-000000{text}"]
    )
    assert parsed[0].value() == f"outputs/runs/2026-01-01_00-00-00-000000{text}"  # Hydra reads it as it is
    assert label("") == ""


def test_long_labels_stay_apart():
    a, b = label("x-" + "1" * 300), label("x-" + "1" * 299 + "2")
    assert len(a) <= 121 and len(b) <= 121 and a != b


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_a_single_run_gets_one_directory(monkeypatch, tmp_path, value):
    assert (
        train_in_process(monkeypatch, "debug=fdr", "logger=none", f"paths.root={tmp_path}", f"+note={value}")
        == 0
    )
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert _record(run_dir)["status"] == "completed"
    assert "_+note-" in run_dir.name and len(run_dir.name.encode()) < 160


@pytest.mark.slow  # a multirun of every kind of value: one job each
def test_a_sweep_gets_one_directory_per_job_and_its_summary(monkeypatch, tmp_path):
    values = ",".join(VALUES.values())
    assert (
        train_in_process(
            monkeypatch, "-m", "debug=fdr", "logger=none", f"paths.root={tmp_path}", f"+note={values}"
        )
        == 0
    )
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert len(jobs) == len(VALUES) and all(_record(job)["status"] == "completed" for job in jobs)
    assert (sweep / "summary.md").is_file() and f"{len(VALUES)} jobs" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_a_failing_sweep_job_with_a_path_value_is_one_directory_and_the_exit_status_says_so(
    monkeypatch, capsys, tmp_path
):
    """The failure gdlab's MNIST error suggests fixing with data.data_dir=<path>: a "/" in the value."""
    missing = f"{tmp_path}/nowhere/a,{tmp_path}/nowhere/b"
    args = ("-m", "data=mnist", "data.download=false", f"data.data_dir={missing}", f"paths.root={tmp_path}")
    assert train_in_process(monkeypatch, *args, *FAST[2:]) == 1  # (MNIST has no n_samples)
    assert "error: 2 of 2 sweep jobs did not complete (2 failed)" in capsys.readouterr().err
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = [p for p in sweep.iterdir() if p.is_dir()]
    assert len(jobs) == 2 and all(_record(job)["status"] == "failed" for job in jobs)
    assert "data.data_dir=" in _record(jobs[0])["error"] and (sweep / "summary.md").is_file()


@pytest.fixture
def named_run(monkeypatch, tmp_path) -> Path:
    """A finished run whose overrides hold every character class, under a relative paths.root."""
    monkeypatch.chdir(tmp_path)
    note = '\'a/b=c,d e "q" ü ' + "z" * 300 + "'"
    assert train_in_process(monkeypatch, "paths.root=outputs", f"+note={note}", *FAST) == 0
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert _record(run_dir)["epoch"] == 1 and (run_dir / "checkpoints" / "last.ckpt").is_file()
    return run_dir


@pytest.mark.parametrize("typed", ["absolute", "relative", "quoted"])
def test_resume_takes_the_directory_as_typed(monkeypatch, tmp_path, named_run, typed):
    path = {
        "absolute": str(named_run),
        "relative": str(named_run.relative_to(tmp_path)),
        "quoted": f"'{named_run.relative_to(tmp_path)}'",
    }[typed]
    assert train_in_process(monkeypatch, f"resume={path}", "trainer.max_epochs=2") == 0
    assert [p.name for p in (tmp_path / "outputs" / "runs").iterdir()] == [named_run.name]  # no new directory
    record = _record(named_run)
    assert record["status"] == "completed" and record["epoch"] == 2
    config = (named_run / "config.yaml").read_text()
    assert "note: a/b=c,d e" in config and "n_samples: 100" in config  # the run's own overrides came back


def test_resume_in_a_sweep_is_a_failed_job_and_the_exit_status_says_so(
    monkeypatch, capsys, tmp_path, named_run
):
    """A job that fails before its run record exists (here: refused at once) still leaves one."""
    assert train_in_process(monkeypatch, "-m", f"resume={named_run}", f"paths.root={tmp_path}/sweeps") == 1
    assert "error: 1 of 1 sweep jobs did not complete (1 failed)" in capsys.readouterr().err
    (sweep,) = (tmp_path / "sweeps" / "multirun").iterdir()
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    assert _record(job) == {"status": "failed", "error": _record(job)["error"]}
    assert "drop -m/--multirun" in _record(job)["error"] and (sweep / "summary.md").is_file()
    assert _record(named_run)["epoch"] == 1  # the run named stays as it was


def test_resume_last_of_a_diverged_run_says_so_keeps_its_record_and_uses_the_new_lr(
    monkeypatch, capsys, tmp_path
):
    """Resuming never erases how an earlier attempt ended, and a setting given again wins over the one
    the checkpoint's optimizer state holds (torch's load_state_dict would bring the old lr back)."""
    common = (
        "data.batch_size=null",
        "logger=none",
        "callbacks.pictures=null",
        "trainer=cpu",
        f"paths.root={tmp_path}",
    )
    assert train_in_process(monkeypatch, *common, "optimizer.lr=1.9", "trainer.max_epochs=300") == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    first = _record(run_dir)
    assert first["status"] == "diverged"
    capsys.readouterr()

    assert (
        train_in_process(monkeypatch, *common, "resume=last", "optimizer.lr=0.5", "trainer.max_epochs=40")
        == 0
    )
    printed = capsys.readouterr().out
    assert f"continuing {run_dir} (it ended: diverged at step {first['step']}: train/loss = " in printed
    assert "optimizer lr: 1.9 in the checkpoint, 0.5 from the config (used)" in printed
    record = _record(run_dir)
    assert record["status"] == "completed" and record["diag/lr"] == 0.5 and record["step"] == 40
    assert record["attempts"] == [first]  # the divergence at its step, with its error, kept as it was


def test_a_checkpoint_of_an_older_gdlab_that_took_blocks_of_steps_is_refused_in_one_line(
    monkeypatch, capsys, tmp_path, named_run
):
    """Older gdlab versions took several optimizer steps per training_step (manual optimization), whose
    step count automatic optimization cannot continue: such a run is refused, not silently restarted."""
    import torch

    last = named_run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    torch.save({**ckpt, "gdlab_steps_per_call": 32}, last)
    assert train_in_process(monkeypatch, f"resume={named_run}", "trainer.max_epochs=2") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"error: resume={named_run} was written by an older gdlab that took 32 optimizer"
    )
    assert "start a new run (eval.py still evaluates the checkpoint)" in err[-1]
    assert len(err) == 1
