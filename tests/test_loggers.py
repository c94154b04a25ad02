"""logger=mlflow and logger=wandb: each run read back with that library's own reader (MLflow's MlflowClient,
W&B's `wandb leet inspect` of the offline run's .wandb log), against metrics.json and the TensorBoard
events of the same run; the files under paths.root or the run directory, never the current directory;
without the `loggers` extra, one line that names it. Nothing here contacts a server: MLflow writes an
SQLite file, W&B runs offline."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gdlab.errors import SettingError
from gdlab.runs.hparams import hparams_for, run_name
from tests.conftest import REPO_ROOT, child_env, compose_config, run_train, scalars, train_in_process
from tests.documented import assert_documented

# (found, not imported: importing MLflow and W&B at collection would cost every test worker seconds)
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None or importlib.util.find_spec("wandb") is None,
    reason="needs the loggers extra: pip install -e '.[loggers]'",
)

RUN = ("trainer.max_epochs=2", "trainer=cpu")


@pytest.fixture(autouse=True)
def mlflow_uri_restored():
    """MLflow sets MLFLOW_TRACKING_URI in the process once a run has logged: unset it again afterwards."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    """W&B as the docs tell a user to run it without an account: offline and silent, its error reports
    off, and its settings and caches in this test's directory instead of the home directory."""
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-home" / "config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-home" / "cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-home" / "data"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.json"))


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _mlflow_runs(root: Path) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("gdlab")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])


def _wandb_inspect(run_dir: Path, *flags: str) -> str:
    """W&B's own reader of an offline run's transaction log, ``wandb leet inspect --json``: one JSON object
    per record, or one summary object (state, config, summary) with ``--summary``."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    return subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(offline)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def _wandb_summary(run_dir: Path) -> dict:
    return json.loads(_wandb_inspect(run_dir, "--summary"))


def _wandb_series(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``key``'s values in the run's history, each at the Trainer step it was logged with."""
    records = [json.loads(line) for line in _wandb_inspect(run_dir).splitlines() if line.strip()]
    rows = [r["history"]["item"] for r in records if r.get("type") == "history"]
    return [(int(row["trainer/global_step"]), row[key]) for row in rows if key in row]


# --- the configs ---------------------------------------------------------------------------------------


def test_the_logger_files_go_under_paths_root_and_the_run_directory(tmp_path):
    root, run = tmp_path / "root", tmp_path / "root" / "runs" / "2026-01-02_03-04-05-000001_logger-mlflow"
    cfg = compose_config("train", "logger=[mlflow,wandb]", f"paths.root={root}", f"paths.output_dir={run}")
    node = OmegaConf.to_container(cfg.logger, resolve=True)
    assert node["mlflow"]["tracking_uri"] == f"sqlite:///{root}/mlflow.db"
    assert node["mlflow"]["artifact_location"] == f"{root}/mlartifacts"
    assert node["mlflow"]["tags"] == {"run_dir": str(run)}
    assert node["wandb"]["save_dir"] == str(run) and node["wandb"]["offline"] is True
    # named as TensorBoard's HParams rows are: what tells the run apart, then its time
    name = "logger-mlflow @ 2026-01-02_03-04-05-000001"
    assert node["mlflow"]["run_name"] == name == node["wandb"]["name"] == run_name(str(run))


def test_the_wandb_project_comes_from_wandbs_own_variable(tmp_path, monkeypatch):
    cfg = compose_config("train", "logger=wandb", f"paths.output_dir={tmp_path}")
    assert cfg.logger.wandb.project == "gdlab"
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    assert compose_config("train", "logger=wandb", f"paths.output_dir={tmp_path}").logger.wandb.project == (
        "my-project"
    )


def test_group_overrides_are_flat_hyperparameters_as_typed(typed):
    cfg = typed("logger=[tensorboard,mlflow]", "scheduler=cosine", "optimizer.lr=0.1")
    params = hparams_for(cfg, status="completed")
    assert params["logger"] == "[tensorboard,mlflow]" and params["scheduler"] == "cosine"
    assert params["optimizer.lr"] == 0.1 and params["status"] == "completed"
    assert all(len(str(v)) < 100 for v in params.values()), params  # no composed config as text


def test_a_logger_that_cannot_finish_the_run_leaves_the_others_and_the_record(tmp_path, monkeypatch, caplog):
    import wandb
    from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

    from gdlab.runs.loggers import close_loggers

    class Broken(Logger):
        name, version = "broken", 0

        def log_hyperparams(self, params, *args, **kwargs): ...

        def log_metrics(self, metrics, step=None): ...

        def finalize(self, status):
            raise OSError("disk full")

    csv = CSVLogger(tmp_path, name="csv", version="")
    csv.log_hyperparams({"status": "completed"})
    monkeypatch.setattr(wandb, "finish", lambda **_: (_ for _ in ()).throw(RuntimeError("service gone")))
    wandb_logger = WandbLogger(offline=True, save_dir=str(tmp_path))  # no run started: nothing to finish
    with caplog.at_level("WARNING", logger="gdlab.runs.loggers"):
        close_loggers([Broken(), csv, wandb_logger], "completed")  # raises nothing
    assert "the Broken logger could not finish the run: disk full" in caplog.text
    assert "W&B could not finish the run: service gone" in caplog.text
    assert "status: completed" in (tmp_path / "csv" / "hparams.yaml").read_text()  # finalized all the same


def test_write_every_is_a_number_of_seconds(tmp_path):
    from gdlab.integrations.mlflow import MLFlowLogger

    for bad in (-1, "soon", True):
        with pytest.raises(
            ValueError, match=r"^Invalid write_every: .* \(must be a number of seconds >= 0\)$"
        ):
            MLFlowLogger(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", write_every=bad)
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store is opened


# --- without the extra -----------------------------------------------------------------------------------


# as on a machine without MLflow: no module to import, so Lightning finds no mlflow package either
WITHOUT_MLFLOW = """
import sys
sys.modules["mlflow"] = None
from gdlab.entry import train_main
sys.argv = ["train.py", *sys.argv[1:]]
train_main()
"""


@pytest.mark.slow
def test_mlflow_without_the_extra_is_one_line_naming_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_MLFLOW, "logger=mlflow", f"paths.root={tmp_path}", *RUN],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert_documented("logger=mlflow", proc.stderr.strip().splitlines()[-1])
    (run_dir,) = _run_dirs(tmp_path)
    assert _record(run_dir)["status"] == "failed" and not (tmp_path / "mlflow.db").exists()


def test_wandb_without_the_extra_names_it_too():
    from lightning_utilities.core.imports import RequirementCache

    # what Lightning's WandbLogger raises when no wandb package is installed (here: none new enough)
    missing = ModuleNotFoundError(str(RequirementCache("wandb>=999")))
    assert str(SettingError("logger.wandb", None, missing)) == (
        "logger.wandb needs the optional package wandb, which is not installed: `pip install wandb` "
        "(in a clone of gdlab: `pip install -e '.[loggers]'`, which adds MLflow and W&B)"
    )


def test_the_loggers_extra_holds_every_optional_logger_package():
    import tomllib

    from gdlab.errors import OPTIONAL_PACKAGES

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    listed = {req.split(">")[0].split("<")[0].split("=")[0].split("!")[0].strip() for req in
              extras["optional-dependencies"]["loggers"]}  # fmt: skip
    for install, extra in OPTIONAL_PACKAGES.values():
        assert extra == "loggers" and set(install.split()) <= listed, (install, listed)


# --- runs read back ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_next_to_tensorboard_records_the_same_run(monkeypatch, tmp_path):
    """One run with logger=[tensorboard,mlflow], started from another directory: MLflow's client reads
    the flat params, every optimizer step's train/loss (the values TensorBoard has) and the final metrics
    of metrics.json; nothing lands in the current directory."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert train_in_process(monkeypatch, "logger=[tensorboard,mlflow]", f"paths.root={root}", *RUN) == 0
    assert list(elsewhere.iterdir()) == []  # no mlruns/, mlartifacts/ or mlflow.db here
    (run_dir,) = _run_dirs(root)
    record = _record(run_dir)
    client, (run,) = _mlflow_runs(root)
    assert run.info.status == "FINISHED" and run.info.run_name == run_name(str(run_dir))
    assert run.data.tags["run_dir"] == str(run_dir)
    params = run.data.params
    assert params["optimizer.lr"] == "0.05" and params["seed"] == "0" and params["status"] == "completed"
    assert params["logger"] == "[tensorboard,mlflow]" and params["trainer.max_epochs"] == "2"
    assert params["model"] == "linear" and params["data.batch_size"] == "64"
    # every optimizer step's train/loss at its step, the same numbers as TensorBoard's
    history = client.get_metric_history(run.info.run_id, "train/loss")
    series = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in series] == list(range(record["step"]))
    assert series == scalars(run_dir, "train/loss")[: record["step"]]
    assert series[-1][1] == record["train/loss"]
    # the final values: metrics.json's, test/ at the last step
    for key in ("test/loss", "val/loss", "test/r2", "diag/grad_norm"):
        assert run.data.metrics[key] == record[key], key
    (test_loss,) = client.get_metric_history(run.info.run_id, "test/loss")
    assert test_loss.step == record["step"]
    assert not (root / "mlartifacts").exists()  # no artifacts unless log_model


@pytest.mark.slow
def test_wandb_offline_sweep_writes_one_finished_run_per_job(monkeypatch, tmp_path, offline_wandb):
    """Two sweep jobs in one process, logger=[tensorboard,mlflow,wandb]: W&B's reader finds one run per job
    in the job's directory (the first is finished, not continued by the second), with the job's flat
    config, each step's train/loss as TensorBoard has it and metrics.json's final values; a diverged job
    is a failed run in W&B and MLflow, its status in their params."""
    root = tmp_path / "root"
    sweep = ("-m", "logger=[tensorboard,mlflow,wandb]", "optimizer.lr=0.05,3")
    code = train_in_process(monkeypatch, *sweep, f"paths.root={root}", *RUN)
    assert code == 1  # the diverged job does not complete
    good, diverged = _run_dirs(root)
    assert _record(good)["status"] == "completed" and _record(diverged)["status"] == "diverged"
    for run_dir, lr, state, exit_code in ((good, 0.05, "finished", 0), (diverged, 3.0, "failed", 1)):
        record = _record(run_dir)
        summary = _wandb_summary(run_dir)
        assert summary["name"] == run_name(str(run_dir)) and summary["project"] == "gdlab"
        assert (summary["state"], summary["exit_code"]) == (state, exit_code)
        config = summary["config"]
        assert config["optimizer.lr"] == lr and config["seed"] == "0" and config["status"] == record["status"]
        assert config["logger"] == "[tensorboard,mlflow,wandb]"
        # every step trained, each once at its step (the diverged job trained on to its epoch's end); the
        # reader prints a huge value as a 17-digit integer, so the last digit may round
        series = _wandb_series(run_dir, "train/loss")
        steps, values = zip(*series, strict=True)
        tb_steps, tb_values = zip(*scalars(run_dir, "train/loss"), strict=True)
        assert steps == tuple(range(len(series))) == tb_steps
        assert values == pytest.approx(tb_values, rel=1e-15)
        assert summary["summary"]["train/loss"] == pytest.approx(record["train/loss"], rel=1e-15)
    assert len(_wandb_series(good, "train/loss")) == _record(good)["step"]
    assert _wandb_summary(good)["summary"]["test/loss"] == _record(good)["test/loss"]
    _, runs = _mlflow_runs(root)
    assert [(r.info.status, r.data.params["status"]) for r in runs] == [
        ("FINISHED", "completed"),
        ("FAILED", "diverged"),
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
    reason="needs the sweep extra: pip install -e '.[sweep]'",
)
def test_parallel_jobs_share_a_new_mlflow_store(tmp_path):
    """Two jobs in parallel processes start on a store that does not exist yet: one creates its tables
    and the experiment while the other waits (else: `table experiments already exists`, a failed job)."""
    sweep = (
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer.lr=0.01,0.1",
        "logger=mlflow",
    )
    proc = run_train(*sweep, f"paths.root={tmp_path}", *RUN, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = _mlflow_runs(tmp_path)
    assert sorted((r.info.status, r.data.params["optimizer.lr"]) for r in runs) == [
        ("FINISHED", "0.01"),
        ("FINISHED", "0.1"),
    ]
