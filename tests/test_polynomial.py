"""data=polynomial: features, train-only standardisation, its checkpointed statistics, and polynomial
regression by gradient descent recovering the least-squares coefficients."""

import pytest
import torch
from hydra.utils import instantiate

from gdlab.analysis import condition_number, least_squares
from gdlab.data import PolynomialDataModule
from gdlab.errors import ArgumentError
from gdlab.train import train


def test_shapes_dtypes_splits_and_features():
    dm = PolynomialDataModule(n_samples=200, degree=4, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    assert {k: len(v[0]) for k, v in dm.splits.items()} == {"train": 140, "val": 20, "test": 40}
    assert dm.input_shape == (4,) and dm.num_outputs == 1 and dm.task == "regression"
    x, y = dm.splits["train"]
    assert x.dtype == y.dtype == torch.float32 and y.shape == (140, 1)
    raw_x = dm.raw_x["train"][0]
    assert raw_x.min() >= dm.x_min and raw_x.max() <= dm.x_max
    # the model's features are the standardised powers x, x^2, x^3, x^4 of the drawn x
    powers = torch.stack([raw_x**k for k in range(1, 5)], dim=1)
    expected = (powers - powers.mean(0)) / powers.std(0, unbiased=False)
    torch.testing.assert_close(x, expected.float(), rtol=0, atol=1e-5)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (PolynomialDataModule(n_samples=60, seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    assert all(torch.equal(a.splits[k][i], b.splits[k][i]) for k in a.splits for i in range(2))
    assert not torch.equal(a.splits["train"][1], c.splits["train"][1])


def test_statistics_come_from_the_training_split_only():
    dm = PolynomialDataModule(n_samples=300, degree=3)
    dm.setup()
    x_train, x_val = dm.splits["train"][0].double(), dm.splits["val"][0].double()
    torch.testing.assert_close(x_train.mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        x_train.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5
    )
    assert x_val.mean(0).abs().max() > 1e-3  # val is transformed with train's statistics, not its own
    torch.testing.assert_close(dm.standardizer.mean, dm.powers(dm.raw_x["train"][0]).mean(0))


def test_standardisation_off_gives_raw_powers_and_a_condition_number_that_explodes():
    on, off = PolynomialDataModule(degree=5), PolynomialDataModule(degree=5, standardize=False)
    off.setup()
    x_raw = off.splits["train"][0]
    torch.testing.assert_close(x_raw[:, 1].double(), off.raw_x["train"][0] ** 2, rtol=1e-6, atol=0)
    on.setup()
    kappa_on = condition_number(on.splits["train"][0].double()).item()
    kappa_off = condition_number(x_raw.double()).item()
    assert kappa_off > 50 * kappa_on, (kappa_on, kappa_off)


def test_raw_coefficients_invert_the_standardisation():
    for standardize in (True, False):
        dm = PolynomialDataModule(degree=5, coefficients=[1.0, -2.0, 0.0, 0.5], standardize=standardize)
        truth = dm.true_weights()  # the true cubic in the model's basis (degree 5: zero padded)
        expected = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 0.0], dtype=torch.float64)
        torch.testing.assert_close(dm.raw_coefficients(truth["w"], truth["b"]), expected, rtol=0, atol=1e-12)
    assert PolynomialDataModule(degree=2).true_weights() == {}  # under-fitting: no weights give the truth


def test_true_params_are_the_generating_polynomial_whatever_the_model_sees():
    # what the run logs as "true parameters of the data": 1 - 2x + 0.5x^3, not the standardised basis
    for degree, standardize in ((3, True), (1, True), (5, False)):
        truth = PolynomialDataModule(degree=degree, standardize=standardize).true_params()
        assert {k: v.item() for k, v in truth.items()} == {"c0": 1.0, "c1": -2.0, "c2": 0.0, "c3": 0.5}


def test_noise_free_data_is_fitted_exactly_by_the_closed_form():
    dm = PolynomialDataModule(n_samples=100, degree=3, noise_std=0.0, coefficients=[0.5, 1.0, -1.0, 0.25])
    ref = dm.closed_form()  # least squares on the standardised features (gdlab.analysis)
    coefs = dm.raw_coefficients(ref.w.squeeze(), ref.b.squeeze())
    torch.testing.assert_close(
        coefs, torch.tensor([0.5, 1.0, -1.0, 0.25], dtype=torch.float64), rtol=0, atol=2e-5
    )


def test_statistics_survive_state_dict_and_transform_new_inputs_identically():
    dm = PolynomialDataModule(n_samples=200, degree=3, seed=0)
    dm.setup()
    state = dm.state_dict()
    assert all(isinstance(v, float) for v in state["standardizer"]["mean"])  # primitives only
    other = PolynomialDataModule(n_samples=200, degree=3, seed=7)  # other data, other statistics
    other.setup()
    new_x = torch.linspace(-3, 3, 11)
    assert not torch.allclose(other.features(new_x), dm.features(new_x))
    other.load_state_dict(state)
    torch.testing.assert_close(other.features(new_x), dm.features(new_x), rtol=0, atol=0)
    # built splits are re-transformed with the loaded statistics
    expected = dm.standardizer(other.powers(other.raw_x["train"][0])).float()
    torch.testing.assert_close(other.splits["train"][0], expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "argument", "match"),
    [
        ({"degree": 0}, "degree", r"^Invalid degree: 0 \(must be an integer >= 1"),
        ({"degree": 2.5}, "degree", r"^Invalid degree: 2\.5 \(must be an integer >= 1"),
        ({"coefficients": []}, "coefficients", r"^Invalid coefficients: empty"),
        ({"x_min": 1.0, "x_max": 1.0}, "x_min", r"^Invalid x_min: 1\.0 \(must be below x_max=1\.0\)"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, "val_fraction", "leaves no training data"),
        ({"n_samples": 3}, "n_samples", r"^Invalid n_samples: 3 \(too small"),
        ({"batch_size": 0}, "batch_size", r"^Invalid batch_size: 0 \(must be an integer >= 1"),
    ],
)
def test_bad_settings_are_one_clear_line(kwargs, argument, match):
    with pytest.raises(ArgumentError, match=match) as info:
        PolynomialDataModule(**kwargs)
    assert info.value.argument == argument and "\n" not in str(info.value)


def test_gradient_descent_recovers_the_least_squares_polynomial(cfg_factory, tmp_path):
    """model=linear on data=polynomial is polynomial regression: full-batch PlainSGD at 0.9 x the critical
    learning rate, mapped back to the raw basis 1, x, x^2, x^3, lands on the least-squares coefficients."""
    dm = instantiate(cfg_factory("data=polynomial").data)
    lr = 0.9 * dm.closed_form().critical_lr
    cfg = cfg_factory(
        "data=polynomial",
        "model=linear",
        "data.batch_size=null",
        f"optimizer.lr={lr}",
        "trainer.max_epochs=100",
        "callbacks=minimal",
        "trainer=cpu",
        "logger=none",
    )
    record = train(cfg)
    assert record["status"] == "completed"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    learned = dm.raw_coefficients(state["net.linear.weight"].double(), state["net.linear.bias"].double())
    raw_train_x, raw_train_y = dm.raw_x["train"]
    sol = least_squares(dm.powers(raw_train_x), raw_train_y)  # the closed form on the raw powers
    reference = torch.cat([sol.b.reshape(1), sol.w.reshape(-1)])
    torch.testing.assert_close(learned, reference, rtol=0, atol=2e-3)
    torch.testing.assert_close(
        learned, dm.coefficients, rtol=0, atol=0.1
    )  # and near the truth 1 - 2x + 0.5x^3
    # the training statistics travel in the checkpoint, so evaluation transforms identically
    saved = ckpt["PolynomialDataModule"]["standardizer"]
    torch.testing.assert_close(
        torch.tensor(saved["mean"], dtype=torch.float64), dm.standardizer.mean, rtol=0, atol=0
    )


def test_a_polynomial_run_logs_the_raw_polynomial_and_still_measures_dist_to_truth(cfg_factory, caplog):
    caplog.set_level("INFO", logger="gdlab.train")
    cfg = cfg_factory("data=polynomial", "data.n_samples=200", "trainer.max_epochs=1")
    assert train(cfg)["status"] == "completed"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("true parameters")]
    assert line == "true parameters of the data: {'c0': 1.0, 'c1': -2.0, 'c2': 0.0, 'c3': 0.5}"
    from tests.conftest import scalars

    assert scalars(cfg.paths.output_dir, "diag/dist_to_truth")  # the model-basis truth: true_weights()
