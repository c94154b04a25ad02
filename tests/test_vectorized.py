"""The vectorized launcher's parts: grouping and derived configs against Hydra's own composition, the
stacked step against torch.optim.SGD, the per-member metrics against torchmetrics, the step log's member
dimension; and one sweep against the basic launcher (the rest: tests/test_vectorized_runs.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import setup_globals
from hydra.types import RunMode
from omegaconf import OmegaConf

import hydra_plugins.gdlab_plugins  # noqa: F401  (gdlab's resolvers)
from gdlab.callbacks.steplog import StepLog
from gdlab.metrics import build_metrics
from gdlab.vectorized.grouping import group_jobs, parse
from gdlab.vectorized.metrics import MemberMetrics
from gdlab.vectorized.step import StackedSGD
from tests.conftest import train_in_process, unmeasured_here


def _grouped(master_overrides: list[str], sweep: list[list[str]]):
    """The sweep's groups, each job's derived config, and Hydra's full composition of each job."""
    setup_globals()
    with initialize_config_module(config_module="gdlab.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", master_overrides, run_mode=RunMode.MULTIRUN)
        jobs = parse(sweep, 0)
        composed = []

        def compose(job):
            composed.append(job.idx)
            return loader.load_sweep_config(master, job.overrides)

        groups = group_jobs(jobs, compose, list(master.hydra.runtime.choices))
        full = [loader.load_sweep_config(master, job.overrides) for job in jobs]
    return groups, jobs, full, composed


@pytest.mark.slow
def test_derived_configs_equal_hydras_composition_and_group_only_batchable_keys():
    sweep = [
        ["experiment=lr_regimes", f"lr_regime={r}", f"seed={s}"] for r in ("0.5c", "0.01") for s in (0, 1)
    ]
    sweep += [["experiment=lr_regimes", "lr_regime=0.5c", "seed=0", "trainer.max_epochs=3"]]
    sweep += [["experiment=lr_regimes", "lr_regime=0.5c", "seed=0", "model=mlp"]]
    groups, jobs, full, composed = _grouped(["experiment=lr_regimes"], sweep)
    # lr_regime only feeds optimizer.lr and seed only the weights and shuffle order: one group; another
    # max_epochs or model: groups of their own, each composed by Hydra
    assert [[j.idx for j in g.jobs] for g in groups] == [[0, 1, 2, 3], [4], [5]]
    assert composed == [0, 4, 5]
    for job, hydra_config in zip(jobs, full, strict=True):
        assert OmegaConf.to_container(job.config) == OmegaConf.to_container(hydra_config)
    assert jobs[3].config.hydra.job.override_dirname == "experiment-lr_regimes_lr_regime-0.01_seed-1"


def test_a_key_that_changes_training_never_joins_a_group():
    sweep = [[f"optimizer.lr={lr}", f"data.noise_std={n}"] for lr in (0.1, 0.2) for n in (0.1, 0.5)]
    groups, *_ = _grouped([], sweep)
    assert [[j.idx for j in g.jobs] for g in groups] == [[0, 2], [1, 3]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "rates",
    [
        {},
        {"momentum": [0.9, 0.0, 0.5], "dampening": [0.0, 0.1, 0.0], "weight_decay": [0.01, 0.0, 0.1]},
        {"momentum": [0.9, 0.8, 0.5], "nesterov": True},
    ],
)
def test_stacked_step_is_torch_sgd_bit_for_bit_and_a_frozen_member_stays(dtype, rates):
    torch.manual_seed(0)
    lrs = [0.1, 0.05, 0.2]
    start = torch.randn(3, 4, 5, dtype=dtype)
    stacked = torch.nn.Parameter(start.clone())
    step = StackedSGD([stacked], lr=lrs, **rates)
    alone = [torch.nn.Parameter(start[i].clone()) for i in range(3)]
    own = {k: v for k, v in rates.items() if k != "nesterov"}
    sgds = [
        torch.optim.SGD(
            [alone[i]], lr=lrs[i], nesterov=rates.get("nesterov", False), **{k: v[i] for k, v in own.items()}
        )
        for i in range(3)
    ]
    for t in range(6):
        grad = torch.randn(3, 4, 5, dtype=dtype)
        if t == 3:
            step.freeze(1)
            frozen = stacked.detach()[1].clone()
            grad[1] = float("nan")  # a diverged member's gradient: NaN * 0 would be NaN
        stacked.grad = grad.clone()
        step.step()
        for i in (0, 2):
            alone[i].grad = grad[i].clone()
            sgds[i].step()
    for i in (0, 2):
        assert torch.equal(stacked.detach()[i], alone[i].detach())
    assert torch.equal(stacked.detach()[1], frozen)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_member_metrics_equal_torchmetrics_per_member(dtype):
    torch.manual_seed(0)
    members, reference = MemberMetrics("regression", "val/", with_loss=False), []
    ours_acc = MemberMetrics("classification", "val/", with_loss=False)
    for _ in range(3):
        reference.append(build_metrics("regression", 1).clone(prefix="val/").double())
    accs = [build_metrics("classification", 4).clone(prefix="val/") for _ in range(3)]
    for _ in range(5):
        preds, target = torch.randn(3, 64, 1, dtype=dtype), torch.randn(64, 1, dtype=dtype)
        members.update(preds, target)
        scores, labels = torch.randn(3, 64, 4, dtype=dtype), torch.randint(0, 4, (64,))
        ours_acc.update(scores, labels)
        for i in range(3):
            reference[i].update(preds[i].squeeze(-1), target.squeeze(-1))
            accs[i].update(scores[i], labels)
    ours, acc = members.compute(), ours_acc.compute()
    for i in range(3):
        theirs = reference[i].compute()
        assert ours["val/mse"][i].item() == theirs["val/mse"].item()
        assert ours["val/r2"][i].item() == pytest.approx(theirs["val/r2"].item(), rel=1e-12)
        assert acc["val/acc"][i].item() == accs[i].compute()["val/acc"].item()


def test_step_log_writes_each_members_values_to_its_own_loggers():
    class Sink:
        def __init__(self):
            self.rows = []

        def log_metrics(self, metrics, step):
            self.rows.append((step, dict(metrics)))

    sinks = [Sink(), Sink()]
    log = StepLog(flush_every=10, members=2, member_loggers=[[s] for s in sinks])
    for step in range(3):
        log.open(step, 0)
        log.add({"train/loss": torch.tensor([1.0 + step, 2.0 + step]), "diag/lr": [0.1, 0.2]})
    log.stop_member(1, 1)
    log.flush([])
    assert [s for s, _ in sinks[0].rows] == [0, 1, 2] and [s for s, _ in sinks[1].rows] == [0, 1]
    assert sinks[0].rows[0][1] == {"train/loss": 1.0, "diag/lr": 0.1, "epoch": 0.0}
    assert sinks[1].rows[1][1] == {"train/loss": 3.0}  # the lr did not change: written once per epoch
    assert log.member_latest[1]["train/loss"] == 3.0


def _records(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("multirun/*/*/metrics.json"))}


def _weights(job_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def sweep_both(monkeypatch, tmp_path: Path, *args: str) -> tuple[Path, Path]:
    """The same sweep with the basic and the vectorized launcher; their roots. The basic launcher's sweep is
    the reference, as a hand-written loop would be: coverage.py measures the vectorized one."""
    roots = []
    for launcher in ("basic", "vectorized"):
        root = tmp_path / launcher
        with unmeasured_here() if launcher == "basic" else contextlib.nullcontext():
            code = train_in_process(
                monkeypatch, "-m", f"hydra/launcher={launcher}", f"paths.root={root}", "logger=none", *args
            )
        assert code in (0, 1)
        roots.append(root)
    return roots[0], roots[1]


def assert_same_results(basic: Path, vectorized: Path, rel: float) -> None:
    """Every job's final weights and metrics.json numbers agree to ``rel`` (the same keys, the same status)."""
    ours, theirs = _records(vectorized), _records(basic)
    assert ours.keys() == theirs.keys() and ours
    for name, record in theirs.items():
        assert ours[name].keys() == record.keys(), name
        for key, value in record.items():
            if isinstance(value, float):
                assert ours[name][key] == pytest.approx(value, rel=rel, abs=1e-300), (name, key)
            else:
                assert ours[name][key] == value, (name, key)
        job = next(basic.glob(f"multirun/*/{name}"))
        mine = next(vectorized.glob(f"multirun/*/{name}"))
        a, b = _weights(job), _weights(mine)
        assert a.keys() == b.keys()
        for key in a:  # relative to the tensor's norm: an entry near 0 has no relative precision of its own
            error = (b[key].double() - a[key].double()).norm() / a[key].double().norm().clamp_min(1e-300)
            assert error <= rel, (name, key, error.item())


@pytest.mark.slow
def test_linear_minibatch_sweep_ends_where_each_job_alone_ends_float64(monkeypatch, tmp_path):
    basic, vectorized = sweep_both(
        monkeypatch,
        tmp_path,
        "optimizer.lr=0.05,0.2",
        "seed=0,1",
        "trainer.max_epochs=2",
        "trainer.precision=64-true",
        "callbacks.pictures=null",
        "data.n_samples=300",
    )
    assert_same_results(basic, vectorized, rel=1e-10)
