"""data=csv: a user's own table (.csv, .npy, .npz) trains like the built-in data, gradient descent on it lands
on numpy's least squares, and every bad file is one line naming the setting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from gdlab import entry
from gdlab.data import TableDataModule
from gdlab.errors import describe
from gdlab.factory import build
from gdlab.train import train
from tests.conftest import make_cfg

FAST = ("trainer.max_epochs=1", "logger=none", "callbacks=minimal", "trainer=cpu")
TRUE_W, TRUE_B = np.array([2.0, -0.5, 0.25]), 3.0


def write_regression_csv(path: Path, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features on very different scales and offsets (so standardisation matters), a known line plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [5.0, -20.0, 1.0]
    y = x @ TRUE_W + TRUE_B + 0.05 * rng.normal(size=n)
    header = "x1,x2,x3,price"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%.10g")
    return x, y


def test_gradient_descent_on_a_csv_lands_on_numpys_least_squares(cfg_factory, tmp_path):
    """The linear model on MSE, full batch at 0.9 x the critical learning rate: its weights, mapped from the
    standardised features it sees back to the file's columns (``original_weights``), equal
    ``numpy.linalg.lstsq`` on the raw training rows; the closed-form diagnostics run on it."""
    path = tmp_path / "houses.csv"
    write_regression_csv(path)
    data = (f"data.path={path}", "data.target=price", "data.batch_size=null")
    dm = instantiate(cfg_factory("data=csv", *data).data)
    lr = 0.9 * dm.closed_form().critical_lr
    cfg = cfg_factory(
        "data=csv", *data, "model=linear", f"optimizer.lr={lr}", "trainer.max_epochs=60",
        "trainer=cpu", "logger=none", "callbacks.pictures=null", "callbacks.model_summary=null",
    )  # fmt: skip
    record = train(cfg)
    assert record["status"] == "completed"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["diag/loss_gap"] < 1e-6  # the closed form applies to this run: L(theta) - L* at the end
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    learned = dm.original_weights(state["net.linear.weight"], state["net.linear.bias"])
    raw_x, raw_y = dm.raw["train"]
    design = np.column_stack([raw_x.numpy(), np.ones(len(raw_x))])
    solution = np.linalg.lstsq(design, raw_y.numpy().reshape(-1), rcond=None)[0]
    np.testing.assert_allclose(learned["w"].numpy(), solution[:3], rtol=1e-3)
    np.testing.assert_allclose(float(learned["b"]), solution[3], rtol=1e-3)
    np.testing.assert_allclose(solution[:3], TRUE_W, atol=0.1)  # and the file's true line


def test_splits_standardise_with_training_statistics_and_follow_the_seed(tmp_path):
    path = tmp_path / "t.csv"
    x, _ = write_regression_csv(path, n=100)
    dm = TableDataModule(
        str(path), target="price", features=["x3", "x1"], val_fraction=0.1, test_fraction=0.2
    )
    dm.setup()
    assert {k: len(v[0]) for k, v in dm.splits.items()} == {"train": 70, "val": 10, "test": 20}
    assert dm.input_shape == (2,) and dm.num_outputs == 1 and dm.task == "regression"
    assert dm.feature_names == ["x3", "x1"]
    raw = dm.raw["train"][0]
    assert torch.allclose(raw.double(), torch.from_numpy(x[:, [2, 0]]).double()[torch.randperm(100, generator=torch.Generator().manual_seed(0))[:70]])  # fmt: skip
    torch.testing.assert_close(dm.splits["train"][0].double().mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)  # fmt: skip
    other = TableDataModule(str(path), target=-1, seed=1)
    other.setup()
    assert other.input_shape == (3,) and not torch.equal(other.raw["train"][1], dm.raw["train"][1])


def test_an_integer_target_with_few_values_is_classification(tmp_path, caplog):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 2))
    labels = np.array([3, 7, 9])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)]
    np.save(tmp_path / "t.npy", np.column_stack([x, labels]))  # no header: the last column by default
    dm = TableDataModule(str(tmp_path / "t.npy"))
    with caplog.at_level("INFO"):
        dm.setup()
    assert dm.task == "classification" and dm.num_outputs == 3 and dm.classes == [3.0, 7.0, 9.0]
    assert dm.splits["train"][1].dtype == torch.int64 and set(dm.splits["train"][1].tolist()) <= {0, 1, 2}
    assert "task: classification (the target" in caplog.text
    forced = TableDataModule(str(tmp_path / "t.npy"), task="regression")
    assert forced.task == "regression" and forced.num_outputs == 1


def test_npz_arrays_are_named_columns(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(40, 2)), age=rng.normal(size=40), y=rng.normal(size=40))
    dm = TableDataModule(str(tmp_path / "t.npz"), target="y", features=["x[1]", "age"])
    assert dm.input_shape == (2,) and dm.feature_names == ["x[1]", "age"]


def test_a_csv_trains_end_to_end_through_train_py(monkeypatch, tmp_path):
    path = tmp_path / "houses.csv"
    write_regression_csv(path, n=60)
    monkeypatch.setattr(sys, "argv", ["train.py", "data=csv", f"data.path={path}", "data.target=price",
                                      f"paths.root={tmp_path / 'out'}", *FAST])  # fmt: skip
    entry.train_main()
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {}
    for name, text in {
        "text.csv": "a,b,y\n1,2,3\n4,oops,6\n1,1,1\n2,2,2\n3,3,3\n",
        "empty_cell.csv": "a,b,y\n1,2,3\n4,,6\n1,1,1\n",
        "nan.csv": "a,b,y\n1,2,3\n\n4,nan,6\n1,1,1\n",  # a blank line: still counted in the line number
        "short.csv": "a,b,y\n1,2,3\n4,5,6\n1,1,1\n",
        "ragged.csv": "a,b,y\n1,2,3\n4,5\n",
        "numbers.csv": "1,2,3\n4,5,6\n",
    }.items():
        files[name] = tmp / name
        files[name].write_text(text)
    return files


# (id, overrides, the setting the line starts with, the facts it must state: the culprit's value, its place)
CASES = [
    ("missing-file", ["data.path={tmp}/nope.csv"], "data.path", ["nope.csv"]),
    ("suffix", ["data.path={tmp}/t.txt"], "data.path", ["t.txt", ".csv"]),
    ("missing-column", ["data.path={tmp}/short.csv", "data.target=price"], "data.target", ["'price'", "a, b, y"]),
    ("missing-feature", ["data.path={tmp}/short.csv", "data.target=y", "data.features=[a,c]"], "data.features", ["'c'"]),
    ("name-without-header", ["data.path={tmp}/numbers.csv", "data.target=y"], "data.target", ["'y'", "1, 2, 3"]),
    ("index-out-of-range", ["data.path={tmp}/short.csv", "data.target=5"], "data.target", ["5", "3 columns"]),
    ("non-numeric", ["data.path={tmp}/text.csv"], "data.path", ["line 3", "'b'", "'oops'"]),
    ("empty-cell", ["data.path={tmp}/empty_cell.csv"], "data.path", ["line 3", "'b'", "empty"]),
    ("nan", ["data.path={tmp}/nan.csv"], "data.path", ["line 4", "'b'", "nan"]),  # the blank line counts
    ("ragged", ["data.path={tmp}/ragged.csv"], "data.path", ["line 3", "2 cells"]),
    ("too-few-rows", ["data.path={tmp}/short.csv"], "data.path", ["3 rows"]),
    ("path-required", [], "data.path", ["required"]),
    ("bad-task", ["data.path={tmp}/short.csv", "data.task=ranking"], "data.task", ["'ranking'"]),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "setting", "facts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_table_is_one_line_naming_the_setting(tmp_path, overrides, setting, facts):
    """Built as train.py builds (factory.build), described as train.py prints errors (errors.describe); the
    wording itself is docs/errors.md's (tests/test_bad_inputs.py checks the rows shown there)."""
    _bad_files(tmp_path)
    (tmp_path / "t.txt").write_text("1,2\n")
    cfg = make_cfg(tmp_path / "out", "data=csv", *(o.format(tmp=tmp_path) for o in overrides), *FAST)
    with pytest.raises(Exception) as info:
        build(cfg)
    line = describe(info.value)
    assert "\n" not in line and line.startswith(setting) and all(fact in line for fact in facts), line


def test_from_the_command_line_one_line_and_exit_status_1(monkeypatch, capsys, tmp_path):
    args = ["data=csv", f"data.path={tmp_path}/nope.csv", f"paths.root={tmp_path / 'out'}", *FAST]
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop:
        entry.train_main()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0].startswith(f"error: data.path={tmp_path}/nope.csv: No such file: "), lines[0]
