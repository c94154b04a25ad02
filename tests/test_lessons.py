"""The numbers behind the lessons: learning-rate regimes, shrinking steps, convex vs non-convex."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import nn

from gdlab.lessons import lr_regimes, lr_scan, nonconvex, step_sizes
from gdlab.models import MLP
from gdlab.optim import PlainSGD
from gdlab.train import train
from tests.conftest import compose_config, scalars, train_in_process

REGIMES = ["0.005c", "0.01", "0.05c", "0.5c", "optimal", "0.95c", "1.05c"]


def _lecture():
    dm = instantiate(compose_config("train", "experiment=lecture").data)
    ref = dm.closed_form()
    x, y = (t.double() for t in dm.splits["train"])
    return x, y, ref


def test_mse_derivative_of_y_equals_a_x_plus_b_has_the_factor_x():
    """dL/da = -2/m sum x_i (y_i - a x_i - b), dL/db = -2/m sum (y_i - a x_i - b): autograd agrees."""
    x, y, _ = _lecture()
    x, y = x.squeeze(1), y.reshape(-1)
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    ((y - (a * x + b)) ** 2).mean().backward()
    m, residual = len(x), (y - (a * x + b)).detach()
    torch.testing.assert_close(a.grad, -2 / m * (x * residual).sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(b.grad, -2 / m * residual.sum(), rtol=1e-12, atol=0)
    wrong = -2 / m * (a.detach() * residual).sum()  # the slope in place of x, as some notes write it
    assert not torch.allclose(a.grad, wrong, rtol=0.1)


def test_lr_regime_resolves_from_the_data(cfg_factory):
    _, _, ref = _lecture()
    for regime, expected in [
        ("0.5c", 0.5 * ref.critical_lr),
        ("optimal", 2 / (ref.lambda_min + ref.lambda_max)),
        ("0.01", 0.01),
    ]:
        cfg = cfg_factory("experiment=lr_regimes", f"lr_regime={regime}")
        assert cfg.optimizer.lr == pytest.approx(expected, rel=1e-12), regime
    with pytest.raises(ValueError, match="lr_regime"):
        lr_regimes.learning_rate("fast", ref)


def _gd_gaps(x, y, ref, lr, steps, target):
    """Full-batch PlainSGD in float64 from the lecture's start w = b = 0.5: L - L* before each step, until
    it reaches ``target`` (or blows up)."""
    net = nn.Linear(1, 1).double()
    nn.init.constant_(net.weight, 0.5)
    nn.init.constant_(net.bias, 0.5)
    opt = PlainSGD(net.parameters(), lr=lr)
    gaps = []
    for step in range(steps):
        loss = ((net(x) - y) ** 2).mean()
        gaps.append((step, loss.item() - ref.loss))
        if gaps[-1][1] <= target or not math.isfinite(loss.item()) or loss.item() > 1e6:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gaps


def test_lr_regimes_are_ordered_by_their_contraction_factor():
    x, y, ref = _lecture()
    target = lr_regimes.TOLERANCE * ref.loss
    steps, predicted = {}, {}
    for regime in REGIMES:
        lr = lr_regimes.learning_rate(regime, ref)
        gaps = _gd_gaps(x, y, ref, lr, 3000, target)
        steps[regime] = lr_regimes.steps_to(gaps, target)
        predicted[regime] = lr_regimes.predicted_steps(lr, ref, gaps[0][1], target)
    # Faster as the rate rises to 2/(lambda_min + lambda_max), slower again above it; 1.05c never arrives.
    order = [steps[r] for r in REGIMES[:5]]
    assert order == sorted(order, reverse=True) and len(set(order)) == 5, steps
    assert steps["optimal"] < steps["0.95c"] < steps["0.05c"], steps
    assert steps["1.05c"] is None and math.isinf(predicted["1.05c"])
    # The gap shrinks at least by rho^2 per step: never slower than predicted, and not much faster.
    for regime in REGIMES[:-1]:
        assert predicted[regime] / 2 <= steps[regime] <= math.ceil(predicted[regime]), (
            regime,
            steps,
            predicted,
        )
    assert steps["0.01"] > 50 * steps["optimal"], steps  # the "safe small rate" is far from the best


def test_linear_model_from_any_start_reaches_the_same_loss():
    """Convex: eight random starts of the linear model end at the same loss to 1e-9."""
    x, y, ref = _lecture()
    lr = lr_regimes.learning_rate("optimal", ref)
    finals = []
    for seed in range(8):
        torch.manual_seed(seed)
        net = nn.Linear(1, 1).double()
        opt = PlainSGD(net.parameters(), lr=lr)
        for _ in range(100):
            loss = ((net(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals.append(((net(x) - y) ** 2).mean().item())
    assert max(finals) - min(finals) < 1e-9 and abs(finals[0] - ref.loss) < 1e-9, finals


@pytest.mark.slow
def test_step_sizes_of_the_lecture_run_stay_within_lr_times_the_spectrum(tmp_path, monkeypatch):
    code = train_in_process(monkeypatch, "experiment=lecture", f"paths.root={tmp_path}", "trainer=cpu")
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    _, _, ref = _lecture()
    lr = 0.1
    updates = dict(scalars(run_dir, "diag/update_norm"))
    distances = dict(scalars(run_dir, "diag/dist_to_optimum"))
    assert len(updates) == 60
    ratios = [updates[s] / distances[s] for s in sorted(updates)]
    for ratio in ratios:  # TensorBoard keeps float32: 1e-6 of slack
        assert lr * ref.lambda_min * (1 - 1e-6) <= ratio <= lr * ref.lambda_max * (1 + 1e-6), ratios
    assert ratios[-1] == pytest.approx(lr * ref.lambda_min, rel=0.01), ratios[-5:]
    assert list((run_dir / "plots").glob("steps_*.png"))


def test_step_sizes_of_a_path():
    path = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]])
    updates, distances = step_sizes.step_sizes(path, torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(updates, torch.tensor([5.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(distances, torch.tensor([34**0.5, 1.0], dtype=torch.float64))


def test_loss_hessian_is_autograd_hessian_of_the_mlp():
    torch.manual_seed(0)
    net = MLP((1,), 1, hidden_sizes=[2], activation="Tanh").double()
    module = nn.Module()
    module.net, module.loss_fn = net, nn.MSELoss()
    module.forward = net.forward
    x, y = torch.randn(20, 1, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    params = [p.detach().clone() for p in net.parameters()]
    sizes = [p.numel() for p in params]

    def loss(flat):
        chunks = torch.split(flat, sizes)
        h = torch.tanh(x @ chunks[0].reshape(2, 1).T + chunks[1])
        return ((h @ chunks[2].reshape(1, 2).T + chunks[3] - y) ** 2).mean()

    expected = torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]))
    torch.testing.assert_close(nonconvex.loss_hessian(module, x, y), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_lr_regimes_sweep_measures_what_the_contraction_predicts(tmp_path, monkeypatch):
    """The experiment itself (40 steps per rate): table, picture, and the steps the spectrum predicts."""
    code = train_in_process(
        monkeypatch, "experiment=lr_regimes", f"paths.root={tmp_path}", "trainer=cpu", "trainer.max_epochs=40"
    )
    assert code == 0  # the diverged 1.05c job is a result, not a failure of the sweep
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    assert (sweep_dir / "lr_regimes.png").is_file() and list(sweep_dir.glob("events.out.tfevents.*"))
    _, _, ref = _lecture()
    found = {r.regime: r for r in lr_regimes.regimes(sweep_dir, ref)}
    assert sorted(found) == sorted(REGIMES)
    assert found["1.05c"].status == "diverged" and found["1.05c"].steps is None
    for regime in ("0.5c", "optimal"):
        assert found[regime].steps == math.ceil(found[regime].predicted), found[regime]
    assert found["optimal"].steps < found["0.5c"].steps
    assert found["0.01"].steps is None  # 0.01 needs hundreds of steps
    table = (sweep_dir / "lr_regimes.md").read_text()
    assert "| optimal | 0.5064 | 0.533 | 0.0653 | 3 | 3 | completed |" in table, table


def _fake_sweep(sweep_dir, finals, tolerance=1e-4):
    for num, (width, seed, loss, eig, grad) in enumerate(finals):
        job = sweep_dir / f"{num}_job"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.hidden_sizes={width}\n- seed={seed}\n")
        (job / ".hydra" / "config.yaml").write_text(
            f"callbacks:\n  stationary:\n    tolerance: {tolerance}\n"
        )
        record = {"status": "completed", "train/loss": loss, nonconvex.MIN_EIG: eig, nonconvex.MAX_EIG: 10.0}
        record.update({nonconvex.GRAD_NORM: grad, "step": 100 * (num + 1)})
        (job / "metrics.json").write_text(json.dumps(record))


def test_nonconvex_summary_classifies_end_points_only_where_the_gradient_vanished(tmp_path):
    _fake_sweep(
        tmp_path,
        [
            ("[1]", 0, 2.44, 0.0, 5e-5),
            ("[1]", 1, 4.82, -0.3, 5e-5),
            ("[64]", 0, 0.090, 1e-3, 5e-5),
            ("[64]", 1, 0.092, -2e-3, 0.2),  # a negative eigenvalue, but the gradient is still large
        ],
    )
    found = nonconvex.write(tmp_path)
    assert [w.width for w in found] == ["[1]", "[64]"]
    assert found[0].spread == pytest.approx(2.38) and found[1].spread == pytest.approx(0.002)
    assert found[1].kinds == ["minimum", "not stationary"]
    table = (tmp_path / "nonconvex.md").read_text()
    assert "| [1] | 0,1 | 2.44 | 4.82 | 2.38 |" in table and "flat 1, saddle 1 | 100-200 |" in table, table
    assert "minimum 1, not stationary 1 | 300-400 |" in table
    assert (tmp_path / "nonconvex.png").is_file()


def test_stationary_stop_ends_a_run_where_the_gradient_norm_is_below_its_tolerance(cfg_factory, tmp_path):
    # lr 0.3 (the lesson's is 0.05): this seed's unit reaches a stationary point in 40 steps, not 1960
    overrides = (
        "model.hidden_sizes=[1]",
        "seed=0",
        "optimizer.lr=0.3",
        "trainer=cpu",
        "trainer.max_epochs=500",
    )
    record = train(cfg_factory("experiment=nonconvex", *overrides))
    assert record["status"] == "completed" and record["step"] < 500
    assert record[nonconvex.GRAD_NORM] < 1e-4 and nonconvex.MIN_EIG in record
    with pytest.raises(ValueError, match=r"Invalid tolerance: 0 \(must be a number > 0\)"):
        nonconvex.StationaryStop(tolerance=0)


@pytest.mark.slow
def test_one_hidden_unit_spreads_over_seeds_far_more_than_64(cfg_factory):
    """The nonconvex experiment's data, model and rate, 1000 steps, seeds 0-3 by hand: width 1 ends spread over
    plateaus (spread > 0.3), width 64 ends at about one loss; the spread ratio is above 10 (about 140)."""
    cfg = cfg_factory("experiment=nonconvex")
    dm = instantiate(cfg.data)
    dm.setup()
    x, y = dm.splits["train"]
    spread = {}
    for width in (1, 64):
        finals = []
        for seed in range(4):
            torch.manual_seed(seed)
            net = MLP((1,), 1, [width], cfg.model.activation)
            opt = PlainSGD(net.parameters(), lr=cfg.optimizer.lr)
            for _ in range(1000):
                loss = ((net(x) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            finals.append(((net(x) - y) ** 2).mean().item())
        spread[width] = max(finals) - min(finals)
    assert spread[1] > 10 * spread[64] and spread[1] > 0.3, spread


def test_a_nonconvex_run_records_the_extreme_eigenvalues_of_its_final_hessian(cfg_factory, tmp_path):
    """One job of experiment=nonconvex (width 2, 30 steps): metrics.json holds the smallest and largest
    eigenvalue of the exact Hessian of the training loss at the final weights; a larger model records none."""
    cfg = cfg_factory(
        "experiment=nonconvex", "model.hidden_sizes=[2]", "trainer.max_epochs=30", "trainer=cpu"
    )
    record = train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    dm = instantiate(cfg.data)
    dm.setup()
    module = nn.Module()
    module.net = MLP((1,), 1, [2], cfg.model.activation)
    module.net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()})
    module.loss_fn, module.forward = nn.MSELoss(), module.net.forward
    eig = torch.linalg.eigvalsh(nonconvex.loss_hessian(module, *dm.splits["train"]))
    assert record[nonconvex.MIN_EIG] == pytest.approx(float(eig[0]), rel=1e-6, abs=1e-9)
    assert record[nonconvex.MAX_EIG] == pytest.approx(float(eig[-1]), rel=1e-6)
    small = cfg_factory(
        "experiment=nonconvex", "callbacks.hessian.max_params=5", "trainer.max_epochs=2", "trainer=cpu"
    )
    with open_dict(small):
        small.paths.output_dir = str(tmp_path / "skipped")
    assert nonconvex.MIN_EIG not in train(small)  # 193 parameters, above max_params: no Hessian
    with pytest.raises(ValueError, match=r"Invalid max_params: 0 \(must be an integer >= 1\)"):
        nonconvex.HessianSpectrum(max_params=0)


@pytest.mark.slow
def test_lr_scan_puts_each_rate_in_its_regime_and_draws_them(monkeypatch, tmp_path):
    """experiment=lr_scan at three rates, one per regime (stacked by the vectorized launcher): below 0.5c
    and between 0.5c and c the runs converge, above c the guard stops it; lr_scan.md counts them per
    regime and lr_scan.png is drawn."""
    sweep = tmp_path / "scan"
    code = train_in_process(
        monkeypatch,
        "experiment=lr_scan",
        "hydra.sweeper.params.lr_multiple='0.2,0.8,1.2'",
        f"hydra.sweep.dir={sweep}",
        "logger=none",
    )
    assert code == 0  # a diverged rate is a result of the scan
    found = lr_scan.write(sweep)  # what the callback wrote, read back from the jobs
    assert [round(r.multiple, 6) for r in found] == [0.2, 0.8, 1.2]
    assert [r.status for r in found] == ["completed", "completed", "diverged"]
    assert [lr_scan.regime(r.multiple) for r in found] == ["smooth", "oscillating", "divergent"]
    table = (sweep / "lr_scan.md").read_text()
    assert "| smooth | < 0.5 | 1 | 0 |" in table and "| divergent | > 1 | 1 | 1 | - | - |" in table
    assert (sweep / "lr_scan.png").stat().st_size > 10_000
