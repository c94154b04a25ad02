"""Pictures of the descent: PNGs under <run dir>/plots and images in TensorBoard, drawn only where they apply."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gdlab.callbacks.figures import confusion_matrix
from gdlab.data.base import InMemoryDataModule
from gdlab.train import train


class Blobs(InMemoryDataModule):
    """Three Gaussian blobs in 2-D: a classification problem a linear model solves in a few epochs."""

    task = "classification"

    def build(self):
        gen = torch.Generator().manual_seed(self.seed)
        centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
        y = torch.arange(300) % 3
        x = centers[y] + torch.randn(300, 2, generator=gen)
        return {"train": (x[:200], y[:200]), "val": (x[200:250], y[200:250]), "test": (x[250:], y[250:])}

    @property
    def num_outputs(self) -> int:
        return 3


class Quadratic(InMemoryDataModule):
    """y = x^2 on features [x, x^2] of one raw input x: the picture is drawn over x (``raw_x``/``features``)."""

    def features(self, x):
        return torch.stack([x, x**2], dim=1).float()

    def build(self):
        x = torch.linspace(-2, 2, 120, dtype=torch.float64)[
            torch.randperm(120, generator=torch.Generator().manual_seed(0))
        ]
        y = x**2
        self.raw_x = {"train": (x[:80], y[:80]), "val": (x[80:100], y[80:100]), "test": (x[100:], y[100:])}
        return {k: (self.features(v[0]), v[1].float().unsqueeze(1)) for k, v in self.raw_x.items()}


def _images(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}


@pytest.mark.slow
def test_one_feature_run_draws_fit_landscape_and_steps(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "experiment=lecture", "trainer=cpu", "trainer.max_epochs=5", "callbacks.pictures.every_n_epochs=2"
    )
    record = train(cfg)
    assert record["status"] == "completed"
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == [
        f"{kind}_{label}.png"
        for kind in ("fit", "landscape", "steps")
        for label in ("epoch0002", "epoch0004", "final")
    ]
    # every N epochs and at the end (step 5), the same pictures in TensorBoard's Images tab
    assert _images(tmp_path) == {
        "pictures/fit": [2, 4, 5],
        "pictures/landscape": [2, 4, 5],
        "pictures/steps": [2, 4, 5],
    }
    from matplotlib.image import imread

    image = imread(tmp_path / "plots" / "landscape_final.png")
    assert image.shape[0] > 300 and image.shape[1] > 300 and image.std() > 0.05  # a drawing, not a blank


def test_nothing_is_drawn_where_no_picture_applies(cfg_factory, tmp_path):
    """5 features and an MLP: no fit line, no 2-parameter landscape, no classes."""
    cfg = cfg_factory(
        "model=mlp", "model.hidden_sizes=[8]", "trainer=cpu", "trainer.max_epochs=2", "data.n_samples=200"
    )
    assert train(cfg)["status"] == "completed"
    assert not (tmp_path / "plots").exists() and _images(tmp_path) == {}


def test_classification_run_draws_the_confusion_matrix(cfg_factory, tmp_path):
    cfg = cfg_factory("loss=cross_entropy", "trainer=cpu", "trainer.max_epochs=3", "optimizer.lr=0.1")
    with open_dict(cfg):
        cfg.data = OmegaConf.create({"_target_": f"{__name__}.Blobs", "batch_size": 32})
    record = train(cfg)
    assert record["status"] == "completed" and record["val/acc"] > 0.9
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["confusion_final.png"]
    assert _images(tmp_path) == {"pictures/confusion": [record["step"]]}


def test_confusion_matrix_counts_match_sklearn():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (500,), generator=gen)
    preds = torch.where(
        torch.rand(500, generator=gen) < 0.7, target, torch.randint(0, 4, (500,), generator=gen)
    )
    ours = confusion_matrix(preds, target, 4)
    np.testing.assert_array_equal(ours.numpy(), sklearn_confusion_matrix(target, preds, labels=range(4)))
    assert ours.sum() == 500


@pytest.mark.parametrize("every_n_epochs", [0, -1, 1.5])
def test_bad_picture_interval_is_a_clear_error(every_n_epochs):
    from gdlab.callbacks import DescentPictures
    from gdlab.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"^Invalid every_n_epochs: .* \(must be an integer >= 1\)$"):
        DescentPictures(every_n_epochs=every_n_epochs)


def test_features_of_one_raw_input_are_drawn_over_that_input(cfg_factory, tmp_path):
    """Polynomial-style data (features of one x): the fit picture shows y against x with the model's curve."""
    cfg = cfg_factory("trainer=cpu", "trainer.max_epochs=2", "callbacks.pictures.every_n_epochs=2")
    with open_dict(cfg):
        cfg.data = OmegaConf.create({"_target_": f"{__name__}.Quadratic", "batch_size": None})
    assert train(cfg)["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["fit_epoch0002.png"]
