"""Multiruns as a user runs them: failures recorded and the sweep goes on, summary, exit status, the
real sweeper/launcher plugins, and a real TensorBoard server reading the finished sweep."""

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT, child_env, compose_config, run_train
from tests.documented import assert_documented

# These tests use the real plugins of the sweep extra (scripts/dev.sh installs it).
needs_sweep_extra = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None
    or importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None
    or importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="needs the sweep extra: pip install -e '.[sweep]'",
)
pytestmark = needs_sweep_extra

TINY = ("trainer.max_epochs=2", "data.n_samples=200", "callbacks=none")


def _jobs(root: Path) -> tuple[Path, list[Path]]:
    (sweep,) = (root / "multirun").iterdir()
    return sweep, sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """lr=-1 fails (ConfigError) for both seeds; the other four jobs must still run. Jobs run in 2 parallel
    worker processes (joblib launcher): failures are recorded there, the exit status is set here."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.01,-1,0.1", "seed=0,1")
    proc = run_train(*sweep, f"paths.root={root}", *TINY)
    return proc, root


@pytest.mark.slow
def test_failed_jobs_are_recorded_and_the_sweep_goes_on(failing_sweep):
    proc, root = failing_sweep
    assert proc.returncode == 1, proc.stderr[-2000:]  # the command says something failed...
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    assert "2 of 6 sweep jobs did not complete (2 failed)" in proc.stderr
    _, jobs = _jobs(root)
    records = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert len(records) == 6  # ...after running every job
    lrs = [j.name.split("optimizer.lr-")[1].split("_")[0] for j in jobs]
    for lr, record in zip(lrs, records, strict=True):
        if lr == "-1":
            assert record["status"] == "failed"
            assert record["error"] == "optimizer.lr=-1: Invalid learning rate: -1 (must be finite and > 0)"
        else:
            assert record["status"] == "completed" and record["val/loss"] > 0


@pytest.mark.slow
def test_sweep_summary_is_written_at_the_end(failing_sweep):
    _, root = failing_sweep
    sweep, jobs = _jobs(root)
    md = (sweep / "summary.md").read_text()
    assert "6 jobs, 3 configurations" in md
    row = next(line for line in md.splitlines() if line.startswith("| 0.1 |"))
    vals = [json.loads((j / "metrics.json").read_text())["val/loss"] for j in jobs if "lr-0.1_" in j.name]
    mean = sum(vals) / 2
    std = abs(vals[0] - vals[1]) / 2**0.5  # sample std of two values
    assert row.startswith("| 0.1 | 0,1 | completed 2 |") and f"{mean:.4g} ± {std:.4g}" in row
    assert "| -1 | 0,1 | failed 2 |" in md
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.png").stat().st_size > 5000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None, timeout: float = 10):
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"}  # TensorBoard wants it on POSTs
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data, headers=headers), timeout=timeout
    ) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_tensorboard_server_shows_runs_scalars_and_hparams(failing_sweep):
    _, root = failing_sweep
    port = _free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(root)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/data"
    try:
        runs: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(runs) < 4:  # bounded wait: start-up and first load
            assert server.poll() is None, server.stderr.read()
            with contextlib.suppress(OSError):
                runs = _get(f"{base}/runs")
            time.sleep(0.5)
        # one run per job that trained (lr=-1 failed before: its record is the summary's), named by its
        # directory: what differs (the sweep overrides), not only a timestamp, and no "/tensorboard" tail
        assert len(runs) == 4 and all(r.startswith("multirun/") and "tensorboard" not in r for r in runs)
        lrs = sorted(r.split("optimizer.lr-")[1].split("_")[0] for r in runs)
        assert lrs == ["0.01", "0.01", "0.1", "0.1"]
        assert all("_seed-" in r for r in runs)
        tags = _get(f"{base}/plugin/scalars/tags")
        for run in runs:
            assert {"train/loss", "val/loss", "test/loss", "val/r2"} <= set(tags[run])
        experiment = _get(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        names = {h["name"] for h in experiment["hparamInfos"]}
        wanted = {"data", "model", "loss", "optimizer", "optimizer.lr", "data.batch_size", "seed", "status"}
        assert wanted <= names
        assert not any(n.startswith("config") for n in names)  # not the wall of nested config
        metric_tags = [m["name"]["tag"] for m in experiment["metricInfos"]]
        assert metric_tags[:3] == ["train/loss", "val/loss", "test/loss"]  # the first 5 are displayed
        # the columns the dashboard opens on (its first five): the swept keys and the status first
        first = [h["name"] for h in experiment["hparamInfos"] if h.get("differs")]
        assert {"optimizer.lr", "seed", "status"} <= set(first)
        # the Custom Scalars dashboard opens on the losses: train and val on one chart
        layout = _get(f"{base}/plugin/custom_scalars/layout")
        losses = layout["category"][0]
        assert losses["title"] == "losses"
        assert losses["chart"][0]["multiline"]["tag"] == ["^train/loss$", "^val/loss$"]
        request = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": []}
        request["allowedStatuses"] = ["STATUS_SUCCESS", "STATUS_UNKNOWN"]
        groups = _get(f"{base}/plugin/hparams/session_groups", request)["sessionGroups"]
        assert len(groups) == 4
        # trial IDs a person tells apart: the job's directory name first, then the sweep's time
        assert len({g["name"] for g in groups}) == 4
        for group in groups:
            (session,) = group["sessions"]
            job = root / session["name"]
            assert group["name"] == f"{job.name} @ {job.parent.name}"
            record = json.loads((job / "metrics.json").read_text())
            lr = float(session["name"].split("optimizer.lr-")[1].split("_")[0])
            hparams = group["hparams"]
            assert hparams["optimizer.lr"] == pytest.approx(lr)
            # whole numbers as the user typed them, not 0.0000; full batch or not, one text column
            assert hparams["seed"] in ("0", "1") and hparams["trainer.max_epochs"] == "2"
            assert hparams["data.batch_size"] == "64"
            assert hparams["model"] == "linear" and hparams["status"] == record["status"] == "completed"
            values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            assert values["val/loss"] == pytest.approx(record["val/loss"], rel=1e-6)
            assert values["test/loss"] == pytest.approx(record["test/loss"], rel=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_optuna_search_over_lr_and_width(tmp_path):
    proc = run_train("hparams_search=lr_optuna", "hydra.sweeper.n_trials=3", f"paths.root={tmp_path}", *TINY)
    sweep, jobs = _jobs(tmp_path)  # hparams_search=lr_optuna is a multirun without -m
    assert len(jobs) == 3, proc.stderr[-3000:]
    statuses = [json.loads((job / "metrics.json").read_text())["status"] for job in jobs]
    # lr up to 1.0 can diverge (no guard with callbacks=none): a diverged trial is a result of the search
    assert set(statuses) <= {"completed", "diverged"}
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = []
    for job in jobs:
        record = json.loads((job / "metrics.json").read_text())
        cfg = OmegaConf.load(job / "config.yaml")
        assert cfg.model._target_ == "gdlab.models.MLP"
        assert 0.001 <= cfg.optimizer.lr <= 1.0
        assert list(cfg.model.hidden_sizes) in ([16, 16], [64, 64], [256, 256])
        if record["status"] == "completed":  # a diverged trial returns nothing: FAIL in optuna
            trials.append((record["val/loss"], cfg.optimizer.lr))
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(trials)[0])
    assert best.best_params["optimizer.lr"] == pytest.approx(min(trials)[1])


def _compose_hydra(*overrides: str):
    return compose_config("train", "paths.output_dir=/tmp/x", *overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    ("override", "target"),
    [
        (
            "hydra/launcher=submitit_slurm",
            "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        ),
        ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("hydra/launcher=joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("hparams_search=lr_optuna", "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"),
    ],
)
def test_plugin_configs_compose(override, target):
    """Each option selects its plugin, which takes the composed config as it is (the optuna search itself:
    test_optuna_search_over_lr_and_width)."""
    from hydra.utils import instantiate

    cfg = _compose_hydra(override)
    node = cfg.hydra.sweeper if "optuna" in override else cfg.hydra.launcher
    assert node._target_ == target
    plugin = instantiate(node)  # a key the plugin does not take, or a wrong type, fails here
    assert f"{type(plugin).__module__}.{type(plugin).__name__}" == target
    if "slurm" in override:  # SLURM's logs and pickles beside the sweep's job directories
        assert cfg.hydra.launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"


STAND_IN = """
import sys
from hydra.core.plugins import Plugins
Plugins.instance()  # Hydra's plugin scan: the real plugins register their configs
from hydra_plugins.gdlab_plugins import register_missing_plugins
register_missing_plugins(is_installed=lambda module: False)  # as on a machine without the extra
from gdlab.entry import train_main
sys.argv = ["train.py", *sys.argv[1:]]
train_main()
"""


@pytest.mark.slow
def test_missing_plugin_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", STAND_IN, "-m", "hydra/launcher=joblib", f"paths.root={tmp_path}", *TINY],
        cwd=REPO_ROOT,
        env=child_env(measured=True),  # the only run without the plugin
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert_documented("hydra/launcher=joblib", proc.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "multirun").exists() or not any((tmp_path / "multirun").rglob("metrics.json"))


def test_missing_sweeper_stand_in_names_the_extra():
    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf

    from gdlab.errors import ConfigError

    node = {"_target_": "hydra_plugins.gdlab_plugins.MissingSweeper", "sampler": {"seed": 0}}
    node.update(group="hydra/sweeper", option="optuna", distribution="hydra-optuna-sweeper")
    with pytest.raises(Exception) as info:  # Hydra wraps what the plugin raised
        Plugins.instance()._instantiate(OmegaConf.create(node))
    chain = [info.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    (error,) = [e for e in chain if isinstance(e, ConfigError)]
    assert str(error).startswith("hydra/sweeper=optuna needs the optional Hydra plugin hydra-optuna-sweeper")
    assert "`pip install hydra-optuna-sweeper`" in str(error)


@pytest.mark.slow
def test_submitit_local_submits_each_job_as_a_real_job_and_records_a_failed_one(tmp_path):
    """submitit's local executor: jobs pickled and run in processes of their own, the way the SLURM
    launcher submits them (up to the scheduler call)."""
    sweep = ("-m", "hydra/launcher=submitit_local", "optimizer.lr=0.1,-1")
    proc = run_train(*sweep, f"paths.root={tmp_path}", *TINY, "logger=none", timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 of 2 sweep jobs did not complete (1 failed)" in proc.stderr
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())
    records = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert [r["status"] for r in records] == ["completed", "failed"]
    assert records[1]["error"].startswith("optimizer.lr=-1: Invalid learning rate")
    assert (sweep_dir / ".submitit").is_dir()  # submitit's own job records: the jobs went through it
    assert (sweep_dir / "summary.md").is_file()
