"""The default run through the real training path: convergence, recovery of the truth, and its outputs."""

import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gdlab.models import LinearModel
from gdlab.train import train
from tests.conftest import scalars


def _closed_form_test_loss(cfg) -> tuple[float, torch.Tensor]:
    """Least squares on the train split (torch.linalg.lstsq), evaluated on the test split."""
    dm = instantiate(cfg.data)
    dm.setup()
    (x, y), (xt, yt) = dm.splits["train"], dm.splits["test"]
    ones = torch.ones(len(x), 1, dtype=torch.float64)
    sol = torch.linalg.lstsq(torch.cat([x.double(), ones], 1), y.double()).solution
    pred = torch.cat([xt.double(), torch.ones(len(xt), 1, dtype=torch.float64)], 1) @ sol
    return float(((pred - yt.double()) ** 2).mean()), sol


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    from tests.conftest import make_cfg

    out = tmp_path_factory.mktemp("default_run")
    cfg = make_cfg(out)
    return cfg, train(cfg), out


def test_default_run_reaches_the_closed_form_loss(default_run):
    cfg, metrics, _ = default_run
    reference, _ = _closed_form_test_loss(cfg)
    assert metrics["status"] == "completed"
    assert abs(metrics["test/loss"] / reference - 1) <= 0.01, (metrics["test/loss"], reference)


def test_default_run_recovers_the_true_parameters(default_run):
    cfg, _, out = default_run
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    w, b = (
        ckpt["state_dict"]["net.linear.weight"].double().squeeze(0),
        ckpt["state_dict"]["net.linear.bias"].double(),
    )
    truth = instantiate(cfg.data).true_params()
    # noise_std=0.1 on 1400 samples: the least-squares estimate is within ~0.01 of the truth, GD matches it.
    assert torch.allclose(w, truth["w"], atol=0.02), (w, truth["w"])
    assert torch.allclose(b, truth["b"].reshape(1), atol=0.02), (b, truth["b"])
    _, sol = _closed_form_test_loss(cfg)
    assert torch.allclose(torch.cat([w, b]), sol.squeeze(1), atol=5e-3)


def test_run_directory_holds_metrics_checkpoint_config_and_events(default_run):
    _, metrics, out = default_run
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "completed"
    for key in ["train/loss", "val/loss", "test/loss", "val/mse", "val/r2", "test/mse", "test/r2"]:
        assert isinstance(record[key], float), key
        assert record[key] == pytest.approx(metrics[key])
    assert record["test/r2"] > 0.99
    assert (out / "config.yaml").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    # the whole run config, as config.yaml has it: what eval.py rebuilds the run from
    assert ckpt["hyper_parameters"]["config"] == OmegaConf.to_container(OmegaConf.load(out / "config.yaml"))
    assert ckpt["global_step"] == record["step"] > 0
    assert len(list(out.rglob("events.out.tfevents.*"))) == 1  # fit, test and HParams, in the run dir
    assert all(
        scalars(out, tag) for tag in ("train/loss", "val/loss", "val/r2", "test/loss", "diag/grad_norm")
    )
    steps = [step for step, _ in scalars(out, "train/loss")]
    assert steps == list(range(record["step"]))  # one point per optimizer step
    assert scalars(out, "val/loss")[-1][1] == pytest.approx(record["val/loss"], rel=1e-6)


def test_full_batch_gradient_descent_is_the_mean_over_all_samples(cfg_factory, tmp_path):
    """batch_size: null takes one step per epoch on L = 1/m sum (y - y_hat)^2 over all m training samples."""
    cfg = cfg_factory("data.batch_size=null", "trainer.max_epochs=3", "logger=none", "trainer=cpu")
    record = train(cfg)
    assert record["status"] == "completed" and record["step"] == 3
    dm = instantiate(cfg.data)
    dm.setup()
    x, y = dm.splits["train"]
    torch.manual_seed(cfg.seed)  # train() seeds the same way before building the model
    net = LinearModel((x.shape[1],), 1)
    for _ in range(3):  # the lecture's loop, written out
        net.zero_grad()
        loss = ((y - net(x)) ** 2).sum() / len(x)
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= cfg.optimizer.lr * p.grad
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.allclose(state["net.linear.weight"], net.linear.weight, rtol=0, atol=1e-6)
    assert torch.allclose(state["net.linear.bias"], net.linear.bias, rtol=0, atol=1e-6)
