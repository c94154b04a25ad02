"""DDP with Lightning's strategy on 2 CPU processes (gloo): per-rank shards of each global batch, one
output directory per job, and the same final weights as a single-process run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gdlab.data.batches import InMemoryBatches
from gdlab.errors import ArgumentError
from gdlab.train import train
from tests.conftest import REPO_ROOT, child_env, live_processes, make_cfg, run_train

# 280 training samples, global batch 64: 4 full batches and one of 24, all splitting evenly over 2 ranks.
SMALL = ("data.n_samples=400", "trainer.max_epochs=2", "optimizer.lr=0.1")


def _batches(n=10, batch_size=4, world_size=1, rank=0, shuffle=True):
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    batches = InMemoryBatches(x, x.clone(), batch_size=batch_size, shuffle=shuffle, seed=3)
    if world_size > 1:
        batches.shard(rank, world_size)
    batches.set_epoch(2)
    return batches


@pytest.mark.parametrize("shuffle", [True, False])
def test_rank_shards_make_up_the_single_process_batches(shuffle):
    single = [xb.squeeze(1).tolist() for xb, _ in _batches(n=12, shuffle=shuffle)]
    ranks = [
        [xb.squeeze(1).tolist() for xb, _ in _batches(n=12, world_size=2, rank=r, shuffle=shuffle)]
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 3  # same number of steps on every rank
    for i, batch in enumerate(single):
        assert ranks[0][i] + ranks[1][i] == batch  # contiguous halves of the same global batch
        assert len(ranks[0][i]) == len(ranks[1][i]) == 2


def test_uneven_last_batch_and_batch_size_checks(caplog):
    # 9 samples, batch 4, 2 ranks: batches of 4, 4, 1; the last cannot give both ranks a sample
    ranks = [[len(xb) for xb, _ in _batches(n=9, world_size=2, rank=r)] for r in (0, 1)]
    assert ranks == [[2, 2], [2, 2]]
    assert "skipped each epoch" in caplog.text
    # full batch (batch_size=None) splits the whole split
    full = [[len(xb) for xb, _ in _batches(n=10, batch_size=None, world_size=2, rank=r)] for r in (0, 1)]
    assert full == [[5], [5]]
    with pytest.raises(
        ArgumentError, match=r"^Invalid batch_size: 5 \(the global batch must split evenly over 2"
    ):
        _batches(n=10, batch_size=5, world_size=2)


@pytest.mark.slow
def test_ddp_cpu_single_run_matches_a_single_process_run(tmp_path):
    # The settings come from a config folder of the user's (--config-dir): the run's processes find it too.
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "small.yaml").write_text(  # SMALL, as a config file
        "# @package _global_\ndata:\n  n_samples: 400\ntrainer:\n  max_epochs: 2\noptimizer:\n  lr: 0.1\n"
    )
    where = ("--config-dir", str(tmp_path / "mine"), "experiment=small")
    proc = run_train(*where, "trainer=ddp_cpu", f"paths.root={tmp_path / 'ddp'}", measured=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "ddp" / "runs").iterdir()  # exactly one directory for both processes
    assert "trainer-ddp_cpu" in run_dir.name
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log", "train_ddp_process_1.log"]
    assert len(list(run_dir.rglob("events.*"))) == 1  # one TB run, no per-rank runs
    ddp = json.loads((run_dir / "metrics.json").read_text())
    assert ddp["status"] == "completed" and ddp["step"] == 2 * 5  # 5 global batches per epoch, not 2 x 5

    single = train(make_cfg(tmp_path / "single", "trainer=cpu", *SMALL))
    assert single["step"] == ddp["step"]
    # metrics over all of val/test (every rank evaluates the whole split) and train/* reduced over ranks:
    # train/loss is the last global batch's loss (the mean of the ranks' half-batch losses)
    for key in (
        "val/loss",
        "val/r2",
        "test/loss",
        "test/r2",
        "train/mse",
        "train/r2",
        "train/loss",
        "diag/loss_gap",
    ):
        assert ddp[key] == pytest.approx(single[key], rel=1e-4), key
    w_ddp = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w_one = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name in ("net.linear.weight", "net.linear.bias"):
        # the average of two half-batch gradients is the full-batch gradient, up to float32 rounding
        torch.testing.assert_close(w_ddp[name], w_one[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torchrun_writes_one_run_directory_and_matches_a_single_process_run(tmp_path):
    """torchrun (Lightning's TorchElastic path, the one multi-node jobs use) starts both processes; rank 0
    names the run directory and the other rank reads the name from torchrun's store."""
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--nproc_per_node=2", str(REPO_ROOT / "train.py"), "trainer=ddp_cpu", *SMALL]
    proc = subprocess.run(
        [*command, f"paths.root={tmp_path / 'ddp'}"],
        env=child_env(measured=True),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "ddp" / "runs").iterdir()  # one directory for both processes
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log", "train_rank1.log"]
    ddp = json.loads((run_dir / "metrics.json").read_text())
    assert ddp["status"] == "completed" and ddp["step"] == 2 * 5
    single = train(make_cfg(tmp_path / "single", "trainer=cpu", *SMALL))
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], rel=1e-4)
    w_ddp = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w_one = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name in ("net.linear.weight", "net.linear.bias"):
        torch.testing.assert_close(w_ddp[name], w_one[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ddp_cpu_sweep_records_a_failed_job_goes_on_and_leaves_no_process(tmp_path):
    """Rank 1 of the first job fails mid-training; Lightning then kills that job's rank 0. The job is recorded
    as failed, the next job runs, the summary is written, the exit status is 1, and no process is left."""
    crash = ("+callbacks.crash._target_=tests.crash.RaiseAtStep", "+callbacks.crash.step=2")
    proc = run_train(
        "-m",
        "trainer=ddp_cpu",
        "+callbacks.crash.rank=1,7",
        *crash,
        f"paths.root={tmp_path}",
        *SMALL,
        measured=True,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 2 sweep jobs did not complete (1 failed)" in proc.stderr
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name)
    failed, completed = (json.loads((job / "metrics.json").read_text()) for job in jobs)
    assert failed["status"] == "failed" and failed["error"]  # rank 0 saw rank 1 go (or was killed for it)
    assert completed["status"] == "completed" and completed["step"] == 10
    assert (sweep / "summary.md").is_file()
    assert live_processes(str(tmp_path)) == []


@pytest.mark.slow
def test_a_ddp_run_whose_rank_0_is_killed_is_recorded_failed_and_leaves_no_process(tmp_path):
    """Nothing of the killed rank 0 can record anything or stop rank 1: the process that started the run
    records the failure, says so in one line, and ends every process the run left behind."""
    kill = (
        "+callbacks.kill._target_=tests.crash.SignalAtStep",
        "+callbacks.kill.step=2",
        "+callbacks.kill.rank=0",
    )
    proc = run_train("trainer=ddp_cpu", *kill, f"paths.root={tmp_path}", *SMALL, measured=True)
    assert proc.returncode == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed"
    assert record["error"].startswith("the run's processes ended with exit status -9 before it finished")
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {record['error']}")
    assert live_processes(str(tmp_path)) == []
