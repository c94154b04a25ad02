"""gdlab.losses: MSE one-hot encodes class targets; each loss declares the tasks it fits."""

import torch
from torch.nn import functional as F

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


def test_cross_entropy_is_torch_cross_entropy():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(
        CrossEntropyLoss()(logits, labels), F.cross_entropy(logits, labels), rtol=0, atol=0
    )
