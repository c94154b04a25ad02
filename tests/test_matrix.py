"""Features that meet: {single run, `-m` basic launcher, `-m` joblib launcher} x {all fine, one job fails at
start-up, one diverges, one is interrupted by Ctrl+C}, each with {trainer=cpu, trainer=ddp_cpu} and {plain
values, a value with `/` and `=`}, then `resume` of each interrupted run. Each cell is the real command in a
process group of its own, as a terminal starts it; it checks one directory per job, each job's final status,
the sweep summary, the exit status, and that no process outlives the command.

Every launcher meets every outcome (12 real commands instead of 48). A DDP job starts three interpreters,
so DDP takes four of the cells: each outcome once, each launcher at least once, with both kinds of value;
the value kind alternates so that it meets every launcher and every outcome on each trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, child_env, live_processes

pytestmark = pytest.mark.slow

MODES = {"single": [], "basic": ["-m"], "joblib": ["-m", "hydra/launcher=joblib"]}
# the job that differs (the run itself, or a sweep's second job; the first is always fine):
# the swept setting, the first job's value, this job's value
OUTCOMES = {
    "fine": ("optimizer.lr", "0.05", "0.1"),
    "startup_failure": ("optimizer.lr", "0.05", "-1"),
    "diverges": ("optimizer.lr", "0.05", "50"),
    "interrupted": ("trainer.max_epochs", "2", "100000"),
}
STATUS = {
    "fine": "completed",
    "startup_failure": "failed",
    "diverges": "diverged",
    "interrupted": "interrupted",
}
TINY = ("data.n_samples=200", "trainer.max_epochs=2", "logger=none", "callbacks=minimal")
NOTE = "a/b=c"

DDP_CELLS = {
    ("single", "startup_failure"),
    ("single", "interrupted"),
    ("basic", "fine"),
    ("joblib", "diverges"),
}
CELLS = [
    (mode, "ddp_cpu" if (mode, outcome) in DDP_CELLS else "cpu", outcome, ("plain", "slash")[(m + o) % 2])
    for m, mode in enumerate(MODES)
    for o, outcome in enumerate(OUTCOMES)
]


def _exit_status(mode: str, outcome: str) -> int:
    if outcome == "interrupted":
        return 130
    if outcome == "fine" or (outcome == "diverges" and mode == "single"):
        return 0  # a diverged run is a result; a sweep with one exits 1 (a job did not complete)
    return 1


def _long_job_training_alone(root: Path) -> bool:
    """The long job has trained an epoch, and every other job has completed (joblib runs them side by side)."""
    logs = {log.parent: log.read_text() for log in root.rglob("train.log")}
    long = [run for run, text in logs.items() if "epoch 1/100000" in text]
    others = [run for run in logs if run not in long]
    return bool(long) and all(
        (run / "metrics.json").is_file() and _record(run)["status"] == "completed" for run in others
    )


def _run(root: Path, args: list[str], interrupt: bool) -> tuple[int, str]:
    """Run ``python train.py ARGS`` as a terminal would (its own process group); with ``interrupt``, press
    Ctrl+C (SIGINT to the whole group) once the long job has trained an epoch. Returns (exit status, stderr);
    asserts that no process the command started is left."""
    marker = f"GDLAB_MATRIX_CELL={uuid.uuid4().hex}"
    env = child_env({"PYTHONUNBUFFERED": "1", marker.split("=")[0]: marker.split("=")[1]})
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), *args, f"paths.root={root}"],
        cwd=root.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal: Ctrl+C works
    )
    if interrupt:
        deadline = time.monotonic() + 300  # DDP jobs start three interpreters
        while not _long_job_training_alone(root):
            assert proc.poll() is None and time.monotonic() < deadline, "the long job never trained an epoch"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert live_processes(marker, where="environ") == [], "processes outlived the command"
    return proc.returncode, err


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(("mode", "trainer", "outcome", "values"), CELLS, ids=["-".join(c) for c in CELLS])
def test_cell(tmp_path, mode, trainer, outcome, values):
    key, first, this = OUTCOMES[outcome]
    swept = f"{key}={first},{this}" if mode != "single" else f"{key}={this}"
    note = [f"+note='{NOTE}'"] if values == "slash" else []
    root = tmp_path / "outputs"
    args = [*MODES[mode], *TINY, f"trainer={trainer}", swept, *note]
    code, err = _run(root, args, interrupt=outcome == "interrupted")
    assert code == _exit_status(mode, outcome), err[-3000:]
    assert "Traceback" not in err, err[-3000:]

    if mode == "single":
        (run_dir,) = (root / "runs").iterdir()
        jobs = [run_dir]
    else:
        (sweep,) = (root / "multirun").iterdir()
        jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name)
        assert [job.name.split("_")[0] for job in jobs] == ["0", "1"], jobs
        assert _record(jobs[0])["status"] == "completed"
        summary = (sweep / "summary.md").read_text()
        assert "2 jobs" in summary and STATUS[outcome] in summary, summary
        if outcome == "fine":  # each job trained with its own value
            assert _record(jobs[0])["val/loss"] != _record(jobs[1])["val/loss"]
    last = _record(jobs[-1])
    assert last["status"] == STATUS[outcome], last
    for job in jobs:
        config = (job / "config.yaml").read_text()
        assert (f"note: {NOTE}" in config) == (values == "slash"), config
    if trainer == "ddp_cpu":  # the ranks Lightning started wrote into the job's own directory, nowhere else
        assert [p.name for p in root.iterdir()] == ["runs" if mode == "single" else "multirun"]
        trained = [job for job in jobs if _record(job)["status"] != "failed"]
        assert all((job / "train_ddp_process_1.log").is_file() for job in trained), trained
    if outcome == "interrupted":
        assert "interrupted (Ctrl+C)" in err, err[-2000:]
        _resume_finishes(root, jobs[-1])


def _resume_finishes(root: Path, run_dir: Path) -> None:
    """``resume=<run dir>`` continues the interrupted run in its own directory from its last.ckpt, to
    completion (two epochs more), and keeps the record of how the first attempt ended."""
    before = sorted(p.name for p in run_dir.parent.iterdir())
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    epochs = saved["epoch"] + 2
    code, err = _run(root, [f"resume={run_dir}", f"trainer.max_epochs={epochs}"], interrupt=False)
    assert code == 0, err[-3000:]
    record = _record(run_dir)
    assert record["status"] == "completed" and record["epoch"] == epochs, record
    assert [a["status"] for a in record["attempts"]] == ["interrupted"], record
    assert sorted(p.name for p in run_dir.parent.iterdir()) == before  # no new directory
