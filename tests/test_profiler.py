"""Profiling is one override away: `debug=profiler` writes Lightning's per-hook time table into the run
directory; a default run writes none."""

from __future__ import annotations

from tests.conftest import train_in_process

TINY = ("trainer=cpu", "logger=none", "callbacks=minimal", "data.n_samples=100", "trainer.max_epochs=1")


def test_debug_profiler_writes_the_hook_table_and_the_default_run_does_not(monkeypatch, tmp_path):
    assert train_in_process(monkeypatch, *TINY, "debug=profiler", f"hydra.run.dir={tmp_path / 'p'}") == 0
    table = (tmp_path / "p" / "fit-profile.txt").read_text()
    assert "run_training_epoch" in table and "training_step" in table
    assert train_in_process(monkeypatch, *TINY, f"hydra.run.dir={tmp_path / 'd'}") == 0
    assert (tmp_path / "d" / "metrics.json").exists() and not list((tmp_path / "d").glob("*profile*"))
