"""gdlab.losses: MSE one-hot encodes class targets; cross-entropy's value and gradient are the closed forms
(log-softmax, softmax minus one-hot over m) of gdlab.analysis, checked against autograd."""

import math

import pytest
import torch
from torch.nn import functional as F

from gdlab import analysis
from gdlab.losses import CrossEntropyLoss, MSELoss


def test_mse_on_class_indices_is_mse_on_one_hot_targets():
    scores = torch.tensor([[0.9, 0.2, -0.1], [0.0, 0.5, 0.7]], requires_grad=True)
    labels = torch.tensor([0, 2])
    loss = MSELoss()(scores, labels)
    one_hot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = ((scores - one_hot) ** 2).sum() / 6  # the mean over m x num_classes entries
    torch.testing.assert_close(loss, expected)
    loss.backward()
    torch.testing.assert_close(scores.grad, 2 * (scores - one_hot).detach() / 6)


def test_mse_on_float_targets_is_plain_mse():
    pred, target = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(MSELoss()(pred, target), F.mse_loss(pred, target), rtol=0, atol=0)


def test_cross_entropy_of_two_samples_by_hand():
    """Two samples, two classes: L = -1/2 (log softmax(z_1)[0] + log softmax(z_2)[1]), written out."""
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    # each sample's true class scores 2 above the other: -log(e^2 / (e^2 + 1)) = log(1 + e^-2)
    by_hand = torch.tensor(math.log1p(math.exp(-2.0)), dtype=torch.float64)
    torch.testing.assert_close(CrossEntropyLoss()(logits, labels), by_hand, rtol=1e-15, atol=0)
    torch.testing.assert_close(analysis.cross_entropy(logits, labels), by_hand, rtol=1e-15, atol=0)


@pytest.mark.parametrize(("m", "d", "k"), [(1, 1, 2), (5, 3, 4), (64, 8, 10), (200, 2, 3)])
def test_cross_entropy_gradient_of_a_linear_layer_is_softmax_minus_one_hot_over_m(m, d, k):
    """gdlab's CrossEntropyLoss on ``X w + b``, differentiated by autograd, against ``X^T G`` and ``sum G``
    with ``G = (softmax - onehot) / m`` (float64, batch mean, no class weights)."""
    gen = torch.Generator().manual_seed(m * 100 + k)
    X = torch.randn(m, d, generator=gen, dtype=torch.float64)
    w = torch.randn(d, k, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(k, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, k, (m,), generator=gen)
    logits = X @ w + b
    loss = CrossEntropyLoss()(logits, y)
    aw, ab, alogits = torch.autograd.grad(loss, [w, b, logits])
    torch.testing.assert_close(analysis.cross_entropy(logits, y), loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        analysis.cross_entropy_logit_gradient(logits, y), alogits, rtol=1e-12, atol=1e-12
    )
    dw, db = analysis.cross_entropy_gradient(w.detach(), b.detach(), X, y)
    assert dw.shape == (d, k) and db.shape == (k,)
    torch.testing.assert_close(dw, aw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(db, ab, rtol=1e-12, atol=1e-12)
    # each sample's gradient row sums to zero (softmax sums to one, as does one-hot): so does db
    assert db.sum().abs() < 1e-12
