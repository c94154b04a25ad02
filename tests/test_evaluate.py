"""eval.py: a checkpoint's test metrics and predictions, rebuilt from the run config it carries."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from gdlab.evaluate import evaluate
from gdlab.train import train
from tests.conftest import compose_config, make_cfg, run_train

FAST = ("logger=none", "callbacks=minimal", "trainer=cpu")


def eval_cfg(output_dir: Path, *overrides: str):
    return compose_config("eval", f"paths.output_dir={output_dir}", *FAST[2:], *overrides)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("linear_run")
    record = train(make_cfg(out, *FAST, "data.n_samples=400", "data.batch_size=16", "trainer.max_epochs=8"))
    return out, record


def test_eval_reproduces_the_runs_test_metrics_and_predicts_the_test_split(linear_run, tmp_path):
    run_dir, record = linear_run
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    result = evaluate(eval_cfg(tmp_path, f"ckpt_path={ckpt_path}", "predict=true"))
    assert result["status"] == "completed"
    # the same weights on the same test split, rebuilt from the checkpoint's config alone
    assert result["test/loss"] == record["test/loss"] and result["test/r2"] == record["test/r2"]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "completed" and written["step"] == record["step"]

    state = torch.load(ckpt_path, weights_only=True)["state_dict"]
    dm = instantiate(make_cfg(tmp_path, "data.n_samples=400").data)
    dm.setup()
    x, y = dm.splits["test"]
    expected = x @ state["net.linear.weight"].T + state["net.linear.bias"]  # the model, by hand
    rows = _rows(tmp_path / "predictions.csv")
    assert len(rows) == len(x) == 60
    assert torch.allclose(
        torch.tensor([float(r["prediction"]) for r in rows]), expected.squeeze(1), atol=1e-6
    )
    assert torch.equal(torch.tensor([float(r["target"]) for r in rows]), y.squeeze(1))
    mse = ((torch.tensor([float(r["prediction"]) for r in rows]) - y.squeeze(1)) ** 2).mean()
    assert float(mse) == pytest.approx(record["test/loss"], rel=1e-5)


def test_a_float64_run_is_evaluated_in_float64(tmp_path):
    run_dir = tmp_path / "run"
    record = train(
        make_cfg(run_dir, *FAST, "data.n_samples=200", "trainer.max_epochs=2", "trainer.precision=64-true")
    )
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    result = evaluate(eval_cfg(tmp_path / "eval", ckpt))
    assert result["test/loss"] == record["test/loss"]  # float32 would round the weights first


def test_eval_on_other_data_given_on_the_command_line(linear_run, tmp_path):
    run_dir, record = linear_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    noiseless = evaluate(
        eval_cfg(tmp_path, f"ckpt_path={ckpt}", "data=linear", "data.n_samples=400", "data.noise_std=0.0")
    )
    # y = X w* + b* exactly: only the fit's own error is left, well below the 0.1^2 noise floor
    assert noiseless["test/loss"] < 0.5 * record["test/loss"]


def test_predict_raw_inputs_from_a_file_through_the_datamodules_features(tmp_path):
    run_dir = tmp_path / "run"
    train(make_cfg(run_dir, *FAST, "data=polynomial", "data.n_samples=300", "trainer.max_epochs=2"))
    inputs = tmp_path / "x.csv"
    inputs.write_text("x\n-1.5\n0\n2.25\n")
    out = tmp_path / "eval"
    evaluate(
        eval_cfg(
            out,
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            "predict=true",
            f"predict_input={inputs}",
        )
    )
    rows = _rows(out / "predictions.csv")
    assert [float(r["input_0"]) for r in rows] == [-1.5, 0.0, 2.25]
    # by hand: powers of x, standardised with the training split's statistics, through the linear model
    dm = instantiate(make_cfg(run_dir, "data=polynomial", "data.n_samples=300").data)
    feats = dm.features(torch.tensor([-1.5, 0.0, 2.25], dtype=torch.float64))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    expected = (feats @ state["net.linear.weight"].T + state["net.linear.bias"]).squeeze(1)
    assert torch.allclose(torch.tensor([float(r["prediction"]) for r in rows]), expected, atol=1e-5)


def test_classification_predictions_are_classes_and_probabilities(tmp_path):
    run_dir = tmp_path / "run"
    train(make_cfg(run_dir, *FAST, "data=digits", "loss=cross_entropy", "trainer.max_epochs=1"))
    out = tmp_path / "eval"
    result = evaluate(eval_cfg(out, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "predict=true"))
    rows = _rows(out / "predictions.csv")
    probs = torch.tensor([[float(r[f"prob_{k}"]) for k in range(10)] for r in rows])
    assert torch.allclose(probs.sum(1), torch.ones(len(rows)), atol=1e-5)
    pred = [int(float(r["prediction"])) for r in rows]
    assert pred == probs.argmax(1).tolist()
    acc = sum(p == int(float(r["target"])) for p, r in zip(pred, rows, strict=True)) / len(rows)
    assert acc == pytest.approx(result["test/acc"], abs=1e-6)


def test_predict_input_with_the_wrong_width_is_a_clear_error(linear_run, tmp_path):
    run_dir, _ = linear_run
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"predict_input=.*bad\.csv has 2 columns but the model takes 5"):
        evaluate(
            eval_cfg(
                tmp_path / "e",
                f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                "predict=true",
                f"predict_input={bad}",
            )
        )
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["status"] == "failed"


def test_eval_command_line_takes_paths_of_run_directories_named_after_overrides(
    linear_run, tmp_path, monkeypatch
):
    """Run directories are named like "<time>_model-mlp_optimizer.lr-0.1": characters that Hydra's override
    grammar reads as syntax ("=", ",") never appear in them, so their paths go on the command line as they
    are; a path that holds them anyway takes Hydra's quotes."""
    import shutil
    import sys

    from gdlab.entry import eval_main

    run_dir, record = linear_run
    for name, typed in [
        ("2026-01-01_00-00-00-000000_data.n_samples-400_trainer.max_epochs-8", "{ckpt}"),
        ("elsewhere/a=1,b=2", "'{ckpt}'"),
    ]:
        named = tmp_path / "runs" / name
        shutil.copytree(run_dir / "checkpoints", named / "checkpoints")
        ckpt = typed.format(ckpt=named / "checkpoints" / "last.ckpt")
        root = tmp_path / name.split("/")[0]
        # trainer=cpu: the run was trained on the CPU and its test/loss is compared bit for bit
        monkeypatch.setattr(
            sys, "argv", ["eval.py", f"ckpt_path={ckpt}", f"paths.root={root}", "trainer=cpu"]
        )
        eval_main()
        (out,) = (root / "eval").iterdir()
        result = json.loads((out / "metrics.json").read_text())
        assert result["status"] == "completed" and result["test/loss"] == record["test/loss"]


@pytest.mark.slow
def test_eval_prints_each_line_once_and_no_tips(linear_run, tmp_path):
    run_dir, _ = linear_run
    proc = run_train(
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"paths.root={tmp_path}", script="eval.py"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert console.count("GPU available") == 1 and "Tip:" not in console and "deprecated" not in console
    (out,) = (tmp_path / "eval").iterdir()
    assert "GPU available" in (out / "eval.log").read_text()  # Lightning's lines reach the log file
