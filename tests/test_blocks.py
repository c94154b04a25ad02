"""Several optimizer steps per Lightning training_step (``steps_per_call``) change no result: the same weights
bit for bit, the same metrics.json, the same TensorBoard scalars at the same steps, the same divergence step
and early stop; ``auto`` takes one step per training_step wherever anything counts training_steps, and an
explicit block size there is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from gdlab import blocks
from gdlab.data.batches import Block, InMemoryBatches
from gdlab.errors import ConfigError
from gdlab.factory import build
from gdlab.train import train
from tests.conftest import make_cfg, train_in_process

TINY = ("trainer=cpu", "trainer.max_epochs=3")
REFERENCE_METRICS = {"diag/loss_gap", "diag/dist_to_optimum"}


def _events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event of a run, in the order written (step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _run(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, dict, dict]:
    """Train in this process; (metrics.json without timings, final weights, TensorBoard scalars)."""
    cfg = make_cfg(tmp_path / name, *overrides)
    record = train(cfg)
    ckpt = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
    saved = json.loads((tmp_path / name / "metrics.json").read_text())
    assert saved["status"] == record["status"]
    return saved, ckpt["state_dict"], _events(tmp_path / name)


CASES = {
    "linear": (),
    "mlp on polynomial data": ("data=polynomial", "model=mlp", "model.hidden_sizes=[8]"),
    "cnn on digits": ("data=digits", "model=cnn", "loss=cross_entropy", "trainer.max_epochs=1"),
    "adam, float64": ("optimizer=adam", "trainer.precision=64-true"),
    "diverges": ("experiment=diverge", "trainer.max_epochs=2"),
    "max_steps mid-epoch": ("trainer.max_steps=40", "log_flush_steps=7"),
    "early stopping": ("callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=0"),
}


HEAVY = ("cnn on digits", "diverges")  # the slow tier: the others keep the fast tier's check of every path


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.slow] if c in HEAVY else []) for c in CASES]
)
def test_blocks_of_steps_give_the_same_run_as_one_step_per_training_step(tmp_path, case):
    one = _run(tmp_path, "one", *TINY, *CASES[case], "steps_per_call=1")
    # 5 does not divide the 22 batches of an epoch: blocks end mid-epoch and a short block ends each epoch
    for k in ("auto", "5"):
        metrics, weights, events = _run(tmp_path, k, *TINY, *CASES[case], f"steps_per_call={k}")
        # The least-squares reference itself (LAPACK's lstsq) varies in its last bits with the memory
        # layout of its workspace, so the values measured against it agree to rounding, the rest exactly.
        for name in REFERENCE_METRICS & metrics.keys():
            assert metrics.pop(name) == pytest.approx(one[0][name], rel=1e-12, abs=1e-15), name
        assert metrics == {k: v for k, v in one[0].items() if k not in REFERENCE_METRICS}
        assert weights.keys() == one[1].keys()
        for name, tensor in weights.items():
            assert torch.equal(tensor, one[1][name]), name
        assert events == one[2]  # every tag, step and value, in the order written


def test_auto_takes_blocks_on_the_default_run_and_one_step_where_something_counts_training_steps(tmp_path):
    def chosen(*overrides: str) -> int:
        cfg = make_cfg(tmp_path, "trainer=cpu", *overrides)
        _, module, _ = build(cfg)
        return module.steps_per_call

    assert chosen() == blocks.AUTO
    for overrides in (
        ("scheduler=cosine",),
        ("++trainer.gradient_clip_val=1.0",),
        ("++trainer.accumulate_grad_batches=2",),
        ("++trainer.limit_train_batches=0.5",),
        ("++trainer.val_check_interval=0.5",),
        ("debug=fdr",),
        ("trainer.max_steps=30",),  # ends inside the last block of the 22-batch epochs (22 + 8)
        ("trainer.min_epochs=2",),
        ("callbacks=[default,lr_monitor]",),  # LearningRateMonitor logs per training_step
        ("++callbacks.model_checkpoint.every_n_train_steps=10",),
    ):
        assert chosen(*overrides) == 1, overrides
    assert chosen("trainer.max_steps=44") == blocks.AUTO  # two whole epochs


def test_a_block_size_that_cannot_apply_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    code = train_in_process(
        monkeypatch, "trainer=cpu", "scheduler=cosine", "steps_per_call=8", f"paths.root={tmp_path}"
    )
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: steps_per_call=8 cannot apply here: a learning-rate schedule"), err
    for bad in ("0", "many", "1.5"):
        cfg = make_cfg(tmp_path, "trainer=cpu", f"steps_per_call={bad}")
        with pytest.raises(ConfigError, match=rf"^steps_per_call={bad} must be auto or an integer >= 1"):
            build(cfg)


class CountsBatches(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pass


def test_a_callback_of_the_users_with_per_batch_hooks_keeps_one_step_per_training_step(tmp_path):
    cfg = make_cfg(tmp_path, "trainer=cpu")
    with open_dict(cfg):
        cfg.callbacks["mine"] = {"_target_": f"{__name__}.CountsBatches"}
    _, module, _ = build(cfg)
    assert module.steps_per_call == 1


def test_resuming_takes_the_checkpoints_steps_per_call(tmp_path):
    """A checkpoint of one step per training_step resumes so under auto (older checkpoints are such), to the
    same weights as a run that was never stopped; one of blocks refuses settings that would need one step."""
    straight = _run(tmp_path, "straight", *TINY, "steps_per_call=1")
    _run(tmp_path, "first", "trainer=cpu", "trainer.max_epochs=1", "steps_per_call=1")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = _run(tmp_path, "resumed", *TINY, f"ckpt_path={ckpt}")
    for name, tensor in resumed[1].items():
        assert torch.equal(tensor, straight[1][name]), name

    _run(tmp_path, "blocks", "trainer=cpu", "trainer.max_epochs=1")
    cfg = make_cfg(tmp_path / "clipped", *TINY, f"ckpt_path={tmp_path / 'blocks/checkpoints/last.ckpt'}")
    with open_dict(cfg):
        cfg.trainer.gradient_clip_val = 1.0
    with pytest.raises(
        ConfigError, match=r"trained with steps_per_call=32, which cannot apply now: trainer\."
    ):
        train(cfg)


def test_a_block_is_the_batches_it_stands_for_and_counts_each_as_it_is_taken():
    x = torch.arange(50.0).unsqueeze(1)
    single = InMemoryBatches(x, x, batch_size=4, shuffle=True, seed=1)
    grouped = InMemoryBatches(x, x, batch_size=4, shuffle=True, seed=1).blocks(5)
    assert len(single) == 13 and len(grouped) == 3 and grouped.n_batches == 13
    served = list(grouped)
    assert [len(b) for b in served] == [5, 5, 3] and all(isinstance(b, Block) for b in served)
    flat = [batch for block in served for batch in block]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(flat, single, strict=True))
    # a checkpoint taken after 7 batches (inside the second block) resumes with the rest of that block
    grouped.load_state_dict({"epoch": 0, "batches_served": 7})
    rest = list(grouped)
    assert [(b.first, b.stop) for b in rest] == [(7, 10), (10, 13)]
    block = next(iter(InMemoryBatches(x, x, batch_size=4).blocks(5)))
    taken = iter(block)
    next(taken), next(taken)
    assert block.source.state_dict()["batches_served"] == 2
