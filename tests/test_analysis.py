"""gdlab.analysis against the mathematics: autograd, the normal equations, and gradient descent itself."""

import math

import pytest
import torch
from torch import nn

from gdlab import analysis
from gdlab.data import LinearDataModule
from gdlab.optim import PlainSGD


def _data(m=64, d=3, k=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(m, d, generator=gen, dtype=torch.float64)
    y = (
        torch.randn(m, generator=gen, dtype=torch.float64)
        if k is None
        else torch.randn(m, k, generator=gen, dtype=torch.float64)
    )
    return X, y, gen


def _autograd_gradient(w, b, X, y):
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ((y - (X @ w + b)) ** 2).mean().backward()
    return w.grad, b.grad


@pytest.mark.parametrize(("d", "k"), [(1, None), (3, None), (5, 2)])
def test_analytic_gradient_equals_autograd(d, k):
    X, y, gen = _data(d=d, k=k)
    w_shape, b_shape = ((d,), ()) if k is None else ((d, k), (k,))
    w = torch.randn(w_shape, generator=gen, dtype=torch.float64)
    b = torch.randn(b_shape, generator=gen, dtype=torch.float64)
    dw, db = analysis.mse_gradient(w, b, X, y)
    aw, ab = _autograd_gradient(w, b, X, y)
    assert dw.shape == aw.shape and db.shape == ab.shape
    torch.testing.assert_close(dw, aw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(db, ab, rtol=1e-12, atol=1e-12)


def test_analytic_gradient_at_the_textbook_start_every_weight_0_5():
    """The lecture's start w = b = 0.5; the factor is -(2/m) * x (the input), not the learning rate."""
    X, y, _ = _data(m=50, d=4)
    w, b = torch.full((4,), 0.5, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    dw, db = analysis.mse_gradient(w, b, X, y)
    aw, ab = _autograd_gradient(w, b, X, y)
    torch.testing.assert_close(dw, aw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(db, ab, rtol=1e-12, atol=1e-12)
    residual = y - (X @ w + b)
    assert torch.allclose(dw, -(2 / 50) * X.T @ residual) and torch.allclose(db, -(2 / 50) * residual.sum())


@pytest.mark.parametrize("bias", [True, False])
def test_least_squares_solves_the_normal_equations(bias):
    X, y, _ = _data(m=80, d=3)
    y = y + 3.0  # an offset only the bias can absorb
    w, b, loss = analysis.least_squares(X, y, bias=bias)
    A = analysis.design_matrix(X, bias)
    theta = torch.linalg.solve(A.T @ A, A.T @ y)
    torch.testing.assert_close(torch.cat([w, b.reshape(1)]) if bias else w, theta, rtol=1e-10, atol=1e-10)
    if not bias:
        assert b.item() == 0.0
    torch.testing.assert_close(loss, analysis.mse_loss(w, b, X, y))
    dw, db = analysis.mse_gradient(w, b, X, y)  # the optimum is where the gradient vanishes
    assert dw.abs().max() < 1e-12 and (not bias or abs(db.item()) < 1e-12)


def test_hessian_equals_autograd_hessian_and_the_quadratic_is_exact():
    X, y, gen = _data(m=40, d=2)

    def loss(theta):
        return ((y - (X @ theta[:2] + theta[2])) ** 2).mean()

    theta = torch.randn(3, generator=gen, dtype=torch.float64)
    H = torch.autograd.functional.hessian(loss, theta)
    torch.testing.assert_close(analysis.hessian(X), H, rtol=1e-12, atol=1e-12)
    ref = analysis.reference(X, y)
    # L(theta) = L* + 1/2 (theta - theta*)^T H (theta - theta*), the form the diagnostics use for the gap
    torch.testing.assert_close(
        ref.loss_at(theta[:2].unsqueeze(1), theta[2:]), loss(theta), rtol=1e-12, atol=0
    )
    eig = torch.linalg.eigvalsh(H)
    assert analysis.lambda_max(X).item() == pytest.approx(eig[-1].item(), rel=1e-12)
    assert analysis.condition_number(X).item() == pytest.approx((eig[-1] / eig[0]).item(), rel=1e-10)
    assert analysis.critical_learning_rate(X).item() == pytest.approx(2 / eig[-1].item(), rel=1e-12)


def test_condition_number_of_singular_features_is_infinite():
    X, _, _ = _data(m=30, d=2)
    X = torch.cat([X, X[:, :1]], dim=1)  # a repeated feature: a flat direction
    assert math.isinf(analysis.condition_number(X).item())


def _full_batch_gd(X, y, lr, steps):
    w, b = torch.zeros(X.shape[1], dtype=X.dtype), torch.zeros((), dtype=X.dtype)
    for _ in range(steps):
        dw, db = analysis.mse_gradient(w, b, X, y)
        w, b = w - lr * dw, b - lr * db
    return analysis.mse_loss(w, b, X, y)


def test_critical_learning_rate_separates_convergence_from_divergence():
    X, y, _ = _data(m=100, d=3)
    X = X * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    critical = analysis.critical_learning_rate(X).item()
    optimum = analysis.least_squares(X, y).loss.item()
    assert _full_batch_gd(X, y, 0.98 * critical, 2000).item() == pytest.approx(optimum, rel=1e-9)
    assert _full_batch_gd(X, y, 1.02 * critical, 2000).item() > 1e6 * optimum


def _steps_to_converge(scales, tol=1e-6, max_steps=20_000):
    """Full-batch PlainSGD on the linear model at lr = 0.9 x critical: steps until L - L* <= tol * (L0 - L*)."""
    dm = LinearDataModule(n_samples=300, n_features=2, feature_scales=scales, noise_std=0.1, batch_size=None)
    ref = dm.closed_form()
    x, y = (t.double() for t in dm.splits["train"])
    torch.manual_seed(0)
    net = nn.Linear(2, 1).double()
    opt = PlainSGD(net.parameters(), lr=0.9 * ref.critical_lr)
    gap0 = None
    for step in range(max_steps):
        loss = ((net(x) - y) ** 2).mean()
        gap = loss.item() - ref.loss
        gap0 = gap if gap0 is None else gap0
        if gap <= tol * gap0:
            # Error along eigenvector i shrinks by |1 - lr lambda_i| per step, the gap by its square.
            rate = (1 - 0.9 * ref.critical_lr * torch.linalg.eigvalsh(ref.hessian)).abs().max().item()
            return step, ref.condition_number, math.log(tol) / (2 * math.log(rate))
        opt.zero_grad()
        loss.backward()
        opt.step()
    raise AssertionError(f"no convergence in {max_steps} steps for feature_scales={scales}")


def test_steps_to_converge_grow_with_the_condition_number():
    steps, kappas, predicted = zip(
        *(_steps_to_converge(s) for s in ([1.0, 1.0], [1.0, 3.0], [1.0, 10.0], [1.0, 30.0])), strict=True
    )
    assert kappas[0] < 2 < 5 < kappas[1] < 20 < 50 < kappas[2] < 500 < kappas[3], kappas
    assert steps[0] <= steps[1] < steps[2] < steps[3], steps
    assert steps[3] > 50 * steps[0], steps  # 1232x the condition number: ~80x the steps here
    # ... and the count is what the spectrum predicts (within a factor of 2: the start's components differ).
    for measured, expected in zip(steps, predicted, strict=True):
        assert expected / 2 <= measured <= 2 * expected, (steps, predicted)
