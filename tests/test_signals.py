"""Stopping a run as a cluster or a terminal does: SIGTERM (timeout, SLURM, Kubernetes), SIGHUP (a closed
terminal) and Ctrl+C stop every process of the run at a step boundary, save last.ckpt, record
``interrupted``, end with exit status 128 + the signal, and ``resume`` continues bit for bit. One process
owns a run at a time; a resume that fails leaves the run's record as it was."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gdlab.runs.rundir import LOCK_FILE
from tests.conftest import REPO_ROOT, child_env, live_processes, run_train, train_in_process

# 280 training samples in batches of 32: 9 steps per epoch, 18 in all.
RUN = (
    "data.n_samples=400",
    "data.batch_size=32",
    "trainer.max_epochs=2",
    "trainer=cpu",
    "callbacks=minimal",
    "logger=none",
)
STEPS = 18


def _signal_at(step: int, name: str, *extra: str) -> tuple[str, ...]:
    return (
        "+callbacks.signal._target_=tests.crash.SignalAtStep",
        f"+callbacks.signal.step={step}",
        f"+callbacks.signal.signal_name={name}",
        *extra,
    )


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _ckpt(a)["state_dict"], _ckpt(b)["state_dict"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    mp = pytest.MonkeyPatch()
    try:
        assert train_in_process(mp, *RUN, f"hydra.run.dir={run_dir}") == 0
    finally:
        mp.undo()
    return run_dir


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_stop_at_the_step_record_interrupted_and_resume_bitwise(
    monkeypatch, capsys, tmp_path, reference, name, code
):
    run_dir = tmp_path / "run"
    status = train_in_process(monkeypatch, *RUN, *_signal_at(7, name), f"hydra.run.dir={run_dir}")
    err = capsys.readouterr().err
    assert status == code  # 128 + the signal's number, as a shell reports a command a signal ended
    assert err.strip().splitlines()[-1] == f"interrupted ({name})"
    assert "Traceback" not in err
    record = _record(run_dir)
    assert record["status"] == "interrupted" and record["step"] == 7
    assert _ckpt(run_dir)["global_step"] == 7  # saved at the step the signal came in, a whole step
    assert not (run_dir / LOCK_FILE).exists()

    started = time.perf_counter()
    assert train_in_process(monkeypatch, f"resume={run_dir}") == 0
    took = time.perf_counter() - started
    _assert_same_weights(run_dir, reference)
    # the resumed run's first epoch line (the interrupted run ended before it) times that epoch, not the
    # clock's origin (the machine's uptime)
    (line,) = [x for x in (run_dir / "train.log").read_text().splitlines() if "epoch 1/2" in x]
    assert 0 <= float(re.search(r"\(([\d.]+) s\)$", line).group(1)) <= took
    resumed = _record(run_dir)
    assert resumed["status"] == "completed" and resumed["step"] == STEPS
    assert resumed["test/loss"] == _record(reference)["test/loss"]
    assert resumed["attempts"][-1]["status"] == "interrupted"


def test_two_signals_a_moment_apart_stop_once_without_a_traceback(monkeypatch, capsys, tmp_path):
    run_dir = tmp_path / "run"
    twice = _signal_at(5, "SIGINT", "+callbacks.signal.times=2")
    assert train_in_process(monkeypatch, *RUN, *twice, f"hydra.run.dir={run_dir}") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted (Ctrl+C)"
    assert _record(run_dir)["status"] == "interrupted" and _ckpt(run_dir)["global_step"] == 5


def test_a_second_signal_seconds_later_stops_a_step_that_does_not_end(monkeypatch, capsys, tmp_path):
    """A step that hangs (here: the second signal comes while the step has not ended, with no wait asked):
    the run stops at once, records it, and keeps the last periodic last.ckpt rather than a half step."""
    from gdlab.runs import signals

    monkeypatch.setattr(signals, "INSIST_AFTER", 0.0)
    run_dir = tmp_path / "run"
    twice = _signal_at(5, "SIGTERM", "+callbacks.signal.times=2")
    every_4 = "callbacks.last_checkpoint.every_n_train_steps=4"
    assert train_in_process(monkeypatch, *RUN, every_4, *twice, f"hydra.run.dir={run_dir}") == 143
    assert "Traceback" not in capsys.readouterr().err
    assert _record(run_dir)["status"] == "interrupted" and _ckpt(run_dir)["global_step"] == 4


def test_a_signal_during_start_up_still_leaves_a_record(monkeypatch, capsys, tmp_path):
    """Stopped before the run could write its record (here: while it builds the model)."""
    import gdlab.train

    monkeypatch.setattr(gdlab.train, "check_run_dir", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    run_dir = tmp_path / "run"
    assert train_in_process(monkeypatch, *RUN, f"hydra.run.dir={run_dir}") == 143
    assert "Traceback" not in capsys.readouterr().err
    record = _record(run_dir)
    assert record["status"] == "interrupted" and "start-up" in record["note"]


def test_a_sweep_stops_at_its_job_and_starts_no_other(monkeypatch, capsys, tmp_path):
    sweep = ("-m", *RUN, "optimizer.lr=0.01,0.02,0.03", f"paths.root={tmp_path}")
    assert train_in_process(monkeypatch, *sweep, *_signal_at(3, "SIGTERM")) == 143
    assert "interrupted (SIGTERM); the sweep so far:" in capsys.readouterr().err
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir()]
    assert len(jobs) == 1 and _record(jobs[0])["status"] == "interrupted"


def test_a_failed_resume_leaves_the_finished_run_byte_for_byte(monkeypatch, capsys, reference):
    before = {name: (reference / name).read_bytes() for name in ("metrics.json", "config.yaml")}
    assert train_in_process(monkeypatch, f"resume={reference}", "model=mlp", "trainer.max_epochs=5") == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: resume={reference}")
    assert {name: (reference / name).read_bytes() for name in before} == before
    assert not (reference / LOCK_FILE).exists()
    # another optimizer, whose state the checkpoint's cannot be (it would fail inside fit, while restoring)
    assert train_in_process(monkeypatch, f"resume={reference}", "optimizer=adam", "trainer.max_epochs=5") == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: optimizer: resume={reference} was trained with gdlab.optim.PlainSGD")
    assert {name: (reference / name).read_bytes() for name in before} == before


def test_a_run_another_live_process_holds_is_refused_naming_it_and_a_stale_lock_is_taken(
    monkeypatch, capsys, reference
):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=child_env())
    try:
        (reference / LOCK_FILE).write_text(f"{holder.pid}\n")
        before = (reference / "metrics.json").read_bytes()
        assert train_in_process(monkeypatch, f"resume={reference}") == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f"error: resume={reference}: process {holder.pid} is running this run now")
        assert (reference / "metrics.json").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, and the resume (of a completed run: nothing left to train) runs
    assert train_in_process(monkeypatch, f"resume={reference}") == 0
    assert _record(reference)["status"] == "completed" and not (reference / LOCK_FILE).exists()


def test_more_processes_than_the_machine_holds_are_refused_before_any_starts(monkeypatch, capsys, tmp_path):
    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    devices = (os.cpu_count() or 1) + 1
    args = ("trainer=ddp_cpu", f"trainer.devices={devices}", f"paths.root={tmp_path}")
    assert train_in_process(monkeypatch, *args) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: trainer.devices={devices}: {devices} training processes")
    assert f"pass trainer.devices={os.cpu_count()} or fewer" in line


def test_a_ddp_config_error_is_found_before_the_processes_start(monkeypatch, capsys, tmp_path):
    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    args = ("trainer=ddp_cpu", "data.batch_size=63", f"paths.root={tmp_path}")
    assert train_in_process(monkeypatch, *args) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("error: data.batch_size=63 (the global batch) does not split evenly over the 2 processes")
    )


# 280 training samples in global batches of 8: 35 steps per epoch, 70 in all.
DDP = (
    "trainer=ddp_cpu",
    "data.n_samples=400",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "callbacks=minimal",
    "logger=none",
)


@pytest.mark.slow
def test_sigterm_to_a_ddp_run_stops_every_process_and_resumes_bitwise(tmp_path):
    """The command that waits for the run's processes gets SIGTERM (as from ``timeout`` or SLURM) at step 3
    of 70, and so does rank 1: rank 0 saves and records, no process is left, and ``resume=last`` ends with the weights of an
    uninterrupted DDP run."""
    stop = _signal_at(3, "SIGTERM", "+callbacks.signal.rank=0", "+callbacks.signal.parent=true")
    # rank 1 gets one of its own too (as from a signal to every process): rank 0 still decides for all
    stop += (
        "+callbacks.rank1._target_=tests.crash.SignalAtStep",
        "+callbacks.rank1.step=3",
        "+callbacks.rank1.signal_name=SIGTERM",
        "+callbacks.rank1.rank=1",
    )
    # the uninterrupted run trains meanwhile (most of each run is starting its processes)
    command = [sys.executable, str(REPO_ROOT / "train.py"), *DDP, f"hydra.run.dir={tmp_path / 'reference'}"]
    reference = subprocess.Popen(
        command, cwd=REPO_ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        proc = run_train(*DDP, *stop, f"paths.root={tmp_path / 'stopped'}", measured=True)
        assert proc.returncode == 143, proc.stderr[-3000:]
        assert "interrupted (SIGTERM)" in proc.stderr.splitlines() and "Traceback" not in proc.stderr
        assert live_processes(str(tmp_path / "stopped")) == []
        (run_dir,) = (tmp_path / "stopped" / "runs").iterdir()
        record = _record(run_dir)
        assert record["status"] == "interrupted" and 3 <= record["step"] < 70
        resumed = run_train("resume=last", f"paths.root={tmp_path / 'stopped'}", measured=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    _assert_same_weights(run_dir, tmp_path / "reference")
    assert _record(run_dir)["status"] == "completed" and _record(run_dir)["step"] == 70


def test_a_process_a_run_started_dies_with_the_command_that_started_it(tmp_path):
    """SIGKILL leaves the waiting command no chance to pass anything on: Linux signals its child (a DDP
    run's rank 0, which then saves and records), so nothing of the run trains on after its command."""
    child = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (open('ended', 'w').write('SIGTERM'), os._exit(0)))\n"
        "from gdlab.runs.processes import die_with_parent\n"
        "die_with_parent()\n"
        "open('ready', 'w').close()\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import os, subprocess, sys, time\n"
        f"env = {{**os.environ, 'GDLAB_RUN_PROCESS': str(os.getpid())}}\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}], env=env)\n"
        "time.sleep(60)\n"
    )
    command = subprocess.Popen([sys.executable, "-c", parent], cwd=tmp_path, env=child_env())
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "ready").exists()
    finally:
        command.kill()
        command.wait()
    deadline = time.monotonic() + 10
    ended = tmp_path / "ended"
    # the file appears when the child opens it, its text a moment later: wait for the text
    while not (ended.exists() and ended.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended.read_text() == "SIGTERM"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's")
def test_the_processes_a_run_leaves_are_adopted_and_reaped_when_they_end(tmp_path):
    """A process whose parent ends first (a DDP rank after rank 0) becomes the command's own child, not PID
    1's, so the command reaps it when it ends instead of waiting out its grace period for an init that reaps
    late (a container's). One that outlives the grace is killed and reaped: nothing of the group is left."""
    from gdlab.runs import processes

    parent = (
        "import subprocess, sys\n"
        "orphan = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(orphan.pid, flush=True)\n"
    )
    with processes.adopting_orphans():
        child = subprocess.Popen(
            [sys.executable, "-c", parent], stdout=subprocess.PIPE, start_new_session=True, env=child_env()
        )
        orphan = int(child.stdout.readline())
        assert child.wait(timeout=30) == 0
        # /proc/<pid>/stat: "pid (comm) state ppid ..."
        assert int(Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
        start = time.monotonic()
        processes._end_group(child.pid, grace=0.5)  # the orphan sleeps on: killed after 0.5 s
        assert time.monotonic() - start < 1.5  # the kill's reaping waits at most 1 s more
    with pytest.raises(ProcessLookupError):  # nothing of the group is left, not even an unreaped one
        os.killpg(child.pid, 0)


def test_more_processes_than_the_memory_holds_are_refused(monkeypatch, tmp_path):
    from gdlab.errors import ConfigError
    from gdlab.runs import processes
    from tests.conftest import make_cfg

    monkeypatch.setattr(processes, "_available_memory", lambda: 600 * 2**20)  # room for one process
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    with pytest.raises(
        ConfigError, match=r"^trainer.devices=2: 2 training processes need about 1.0 GiB, 0.6 GiB"
    ):
        processes.launches_processes(make_cfg(tmp_path, "trainer=ddp_cpu"))
