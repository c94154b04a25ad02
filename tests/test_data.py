import pytest
import torch

from gdlab.data import InMemoryBatches, LinearDataModule, PolynomialDataModule
from gdlab.errors import ArgumentError


def test_linear_shapes_splits_and_truth():
    dm = LinearDataModule(n_samples=200, n_features=3, noise_std=0.0, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    sizes = {k: len(v[0]) for k, v in dm.splits.items()}
    assert sizes == {"train": 140, "val": 20, "test": 40}
    assert dm.input_shape == (3,) and dm.num_outputs == 1 and dm.task == "regression"
    x, y = dm.splits["train"]
    assert x.dtype == y.dtype == torch.float32 and y.shape == (140, 1)
    truth = dm.true_params()
    # noise_std=0: the targets are exactly X w* + b* (up to float32 rounding)
    assert torch.allclose(y.double(), x.double() @ truth["w"].unsqueeze(1) + truth["b"], atol=1e-5)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (LinearDataModule(n_samples=50, seed=s) for s in (3, 3, 4))
    for dm in (a, b, c):
        dm.setup()
    assert all(torch.equal(a.splits["train"][i], b.splits["train"][i]) for i in range(2))
    assert not torch.equal(a.splits["train"][0], c.splits["train"][0])


def test_given_truth_is_used():
    dm = LinearDataModule(n_samples=40, n_features=2, true_w=[2.0, -1.0], true_b=0.5)
    assert dm.true_params()["w"].tolist() == [2.0, -1.0]
    assert dm.true_params()["b"].item() == 0.5


def test_batches_cover_every_sample_once_per_epoch_and_reshuffle():
    x = torch.arange(10.0).unsqueeze(1)
    batches = InMemoryBatches(x, x.clone(), batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    epoch0 = torch.cat([b[0] for b in batches]).squeeze(1)
    assert sorted(epoch0.tolist()) == list(range(10))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    batches.set_epoch(1)
    epoch1 = torch.cat([b[0] for b in batches]).squeeze(1)
    assert not torch.equal(epoch0, epoch1)
    batches.set_epoch(0)
    assert torch.equal(
        torch.cat([b[0] for b in batches]).squeeze(1), epoch0
    )  # order depends on (seed, epoch) only
    for bx, by in batches:
        assert torch.equal(bx, by)  # inputs and targets stay paired


def test_full_batch_is_one_batch_of_everything_in_order():
    x = torch.arange(7.0).unsqueeze(1)
    batches = InMemoryBatches(x, x, batch_size=None, shuffle=True)
    (only,) = list(batches)
    assert len(batches) == 1 and torch.equal(only[0], x)


def test_full_batch_datamodule():
    dm = LinearDataModule(n_samples=100, batch_size=None)
    assert len(dm.train_dataloader()) == 1
    ((bx, _),) = list(dm.train_dataloader())
    assert len(bx) == 70


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "64", True])
def test_bad_batch_size(batch_size):
    with pytest.raises(
        ArgumentError, match=r"^Invalid batch_size: .* \(must be an integer >= 1, or None"
    ) as info:
        LinearDataModule(batch_size=batch_size)
    assert info.value.argument == "batch_size"


@pytest.mark.parametrize(
    ("kwargs", "argument", "match"),
    [
        (
            {"val_fraction": 0.0},
            "val_fraction",
            r"^Invalid val_fraction: 0\.0 \(must be strictly between 0 and 1\)",
        ),
        ({"test_fraction": 1.2}, "test_fraction", r"^Invalid test_fraction: 1\.2"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction", "leaves no training data"),
        ({"n_samples": 3}, "n_samples", r"^Invalid n_samples: 3 \(too small for the splits"),
        ({"n_features": 0}, "n_features", r"^Invalid n_features: 0"),
        ({"noise_std": -1.0}, "noise_std", r"^Invalid noise_std: -1\.0"),
        ({"n_features": 2, "true_w": [1.0]}, "true_w", r"^Invalid true_w: 1 entries but n_features=2"),
    ],
)
def test_bad_data_settings(kwargs, argument, match):
    """The datamodule names its own arguments; the command line adds the config key (data.<argument>)."""
    with pytest.raises(ArgumentError, match=match) as info:
        LinearDataModule(**kwargs)
    assert info.value.argument == argument and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("module", "kwargs", "argument"),
    [
        (LinearDataModule, {"n_samples": 10**15}, "n_samples"),
        (LinearDataModule, {"n_features": 10**15}, "n_features"),
        (PolynomialDataModule, {"degree": 10**15}, "degree"),
    ],
)
def test_data_larger_than_memory_is_refused_by_the_setting_that_makes_it_so(module, kwargs, argument):
    """Generated data that cannot fit is refused before torch's allocator fails with a message naming no
    setting; the larger of the two sizes is the one named."""
    with pytest.raises(
        ArgumentError,
        match=rf"^Invalid {argument}: {10**15} \(.* in float64 need .* GiB, more than this machine's",
    ) as info:
        module(**kwargs)
    assert info.value.argument == argument
