import math

import pytest
import torch
from torch import nn

from gdlab.optim import PlainSGD


def _model(dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).to(
        dtype
    )


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 7, generator=gen, dtype=dtype)
        y = torch.randn(32, 1, generator=gen, dtype=dtype)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitwise_identical_to_torch_sgd_after_100_steps(dtype):
    ref, ours = _model(dtype), _model(dtype)
    _train(ref, torch.optim.SGD(ref.parameters(), lr=0.05), 100, dtype)
    _train(ours, PlainSGD(ours.parameters(), lr=0.05), 100, dtype)
    for p_ref, p_ours in zip(ref.parameters(), ours.parameters(), strict=True):
        assert p_ours.dtype == dtype
        assert torch.equal(p_ref, p_ours)  # bitwise, not approximately
    assert any(
        not torch.equal(p, q) for p, q in zip(ref.parameters(), _model(dtype).parameters(), strict=True)
    )


def test_update_is_w_minus_lr_grad():
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = PlainSGD([w], lr=0.1)
    (w**2).sum().backward()  # grad = 2w
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0, 3.0]) - 0.1 * torch.tensor([2.0, -4.0, 6.0]))


def test_param_groups_use_their_own_lr_and_skip_params_without_grad():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    frozen = torch.ones(2, requires_grad=True)  # never receives a gradient
    opt = PlainSGD([{"params": [a]}, {"params": [b, frozen], "lr": 0.5}], lr=0.1)
    (a.sum() + b.sum()).backward()
    opt.step()
    assert torch.allclose(a, torch.full((3,), 0.9))
    assert torch.allclose(b, torch.full((3,), 0.5))
    assert torch.equal(frozen, torch.ones(2))
    assert frozen.grad is None


def test_closure_is_called_and_its_loss_returned():
    w = torch.tensor([2.0], requires_grad=True)
    opt = PlainSGD([w], lr=0.25)
    calls = []

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    loss = opt.step(closure)
    assert calls == [4.0]
    assert loss.item() == 4.0
    assert w.item() == 2.0 - 0.25 * 4.0


def test_state_dict_round_trip():
    model = _model(torch.float32)
    opt = PlainSGD(
        [{"params": list(model.parameters())[:2], "lr": 0.3}, {"params": list(model.parameters())[2:]}],
        lr=0.1,
    )
    state = opt.state_dict()
    fresh = PlainSGD(
        [{"params": list(model.parameters())[:2], "lr": 1.0}, {"params": list(model.parameters())[2:]}],
        lr=1.0,
    )
    fresh.load_state_dict(state)
    assert [g["lr"] for g in fresh.param_groups] == [0.3, 0.1]
    assert fresh.state_dict() == state


def test_mixed_dtypes_in_one_group():
    a = torch.ones(2, dtype=torch.float32, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = PlainSGD([a, b], lr=0.5)
    (a.sum() + b.sum()).backward()
    opt.step()
    assert torch.equal(a.detach(), torch.full((2,), 0.5)) and a.dtype == torch.float32
    assert torch.equal(b.detach(), torch.full((2,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf, -math.inf])
def test_invalid_lr_is_a_value_error_in_torchs_words(lr):
    """The optimizer speaks its own language (its argument, torch's wording), not a config key."""
    with pytest.raises(ValueError, match=rf"^Invalid learning rate: {lr} \(must be finite and > 0\)$"):
        PlainSGD([torch.zeros(1, requires_grad=True)], lr=lr)
    if lr < 0:  # torch.optim.SGD refuses negative rates only, with the same words
        with pytest.raises(ValueError, match=rf"^Invalid learning rate: {lr}"):
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


@pytest.mark.parametrize("lr", ["abc", None, True])
def test_an_lr_that_is_not_a_number_is_a_type_error(lr):
    with pytest.raises(TypeError, match=r"^Invalid learning rate: .* \(must be a number\)$"):
        PlainSGD([torch.zeros(1, requires_grad=True)], lr=lr)


def test_invalid_group_lr_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1.0 \(must be finite and > 0\)$"):
        PlainSGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": -1.0}], lr=0.1)


def test_sparse_gradients_are_refused():
    emb = nn.Embedding(5, 2, sparse=True)
    opt = PlainSGD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
