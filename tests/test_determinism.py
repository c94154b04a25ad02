"""Same config and seed, same numbers: two runs give identical metrics.json values on CPU; the data order
of a resumed epoch is the uninterrupted one."""

import itertools
import json

import pytest
import torch

from gdlab.data import InMemoryBatches
from gdlab.train import train
from tests.conftest import make_cfg, run_train

RUN = ("data.n_samples=300", "data.batch_size=16", "trainer.max_epochs=2", "logger=none", "callbacks=minimal")


def _record(out) -> dict:
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "completed"
    return record


def test_same_seed_twice_gives_identical_metrics(tmp_path):
    for name in ("a", "b"):
        train(make_cfg(tmp_path / name, *RUN, "model=mlp", "trainer=cpu"))
    a, b = _record(tmp_path / "a"), _record(tmp_path / "b")
    assert a == b  # every value, bit for bit (JSON floats round-trip exactly)
    wa = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # ...and the seed matters: the test above could fail
    train(make_cfg(tmp_path / "c", *RUN, "model=mlp", "trainer=cpu", "seed=1"))
    assert _record(tmp_path / "c")["val/loss"] != a["val/loss"]


def _take(batches: InMemoryBatches, k: int) -> list[torch.Tensor]:
    """The first ``k`` batches, pulling exactly ``k`` from the iterator (as a training loop does)."""
    return [x for x, _ in itertools.islice(iter(batches), k)]


def test_batches_resume_mid_epoch_where_they_left_off():
    x = torch.arange(50.0).unsqueeze(1)
    full = InMemoryBatches(x, x, batch_size=8, shuffle=True, seed=3)
    full.set_epoch(4)
    epoch = [b for b, _ in full]
    first = InMemoryBatches(x, x, batch_size=8, shuffle=True, seed=3)
    first.set_epoch(4)
    assert [torch.equal(a, b) for a, b in zip(_take(first, 3), epoch, strict=False)] == [True] * 3
    state = first.state_dict()
    assert state == {"epoch": 4, "batches_served": 3}

    resumed = InMemoryBatches(x, x, batch_size=8, shuffle=True, seed=3)  # a fresh process
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # Lightning sets the epoch after restoring the state, before iter()
    rest = [b for b, _ in resumed]
    assert len(rest) == len(epoch) - 3 and all(
        torch.equal(a, b) for a, b in zip(rest, epoch[3:], strict=True)
    )
    # the restored position is used once: the next pass (next epoch) is whole
    resumed.set_epoch(5)
    assert len(list(resumed)) == len(epoch)


def test_batches_state_of_another_epoch_or_a_finished_pass_starts_from_the_top():
    x = torch.arange(20.0).unsqueeze(1)
    for state in ({"epoch": 1, "batches_served": 2}, {"epoch": 0, "batches_served": 3}):
        batches = InMemoryBatches(x, batch_size=7, shuffle=False)
        batches.load_state_dict(state)
        assert [len(b[0]) for b in batches] == [7, 7, 6]


def test_the_closed_form_optimum_has_the_same_bits_wherever_the_data_lies_in_memory():
    """MKL's default least-squares driver (gelsy) gave different last digits for the same matrix at other
    memory alignments, so two processes with the same seed wrote different diag/dist_to_optimum."""
    from gdlab.analysis import least_squares

    torch.manual_seed(0)
    X, y = torch.randn(2000, 50, dtype=torch.float64), torch.randn(2000, dtype=torch.float64)
    X[:, -1] = 2 * X[:, 0]  # rank-deficient: the minimum-norm solution
    solutions = set()
    for offset in range(8):  # the same values at 8 alignments
        Xs = torch.empty(X.numel() + offset, dtype=X.dtype)[offset:].view(X.shape).copy_(X)
        ys = torch.empty(y.numel() + offset, dtype=y.dtype)[offset:].copy_(y)
        w, b, _ = least_squares(Xs, ys)
        solutions.add(torch.cat([w, b.reshape(1)]).numpy().tobytes())
    assert len(solutions) == 1
    w, b, _ = least_squares(X, y)
    w_ref = torch.linalg.pinv(torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)) @ y
    assert torch.allclose(torch.cat([w, b.reshape(1)]), w_ref, atol=1e-10)


@pytest.mark.slow
def test_the_default_run_twice_in_two_processes_writes_the_same_metrics_bytes(tmp_path):
    """``python train.py`` (the default run, its closed-form diagnostics and logger included; 2 epochs) and
    the same with an MLP, twice, each time in a new process: metrics.json byte for byte."""
    written = []
    for attempt in ("a", "b"):
        proc = run_train("-m", "model=linear,mlp", "trainer.max_epochs=2", f"paths.root={tmp_path / attempt}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        (sweep,) = (tmp_path / attempt / "multirun").iterdir()
        jobs = sorted(sweep.glob("*/metrics.json"))
        assert len(jobs) == 2
        written.append([job.read_bytes() for job in jobs])
    assert written[0] == written[1]
    assert b"diag/dist_to_optimum" in written[0][0]  # the default run's closed-form diagnostics
