"""Shared helpers: compose the real configs (Hydra's compose API) and run train.py as a user would."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import gdlab.conf

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per test process, and in every process a test starts: pytest-xdist already runs a
    worker per core, and two thread pools per core fight each other (a float64 ``A.T @ A`` of the closed
    form took 20-80 ms with 2 threads on a busy 2-core machine, 10 us with 1). Set OMP_NUM_THREADS to
    choose otherwise."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # imported before this hook (a plugin): the variable came too late for it
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


CONFIG_DIR = Path(gdlab.conf.__file__).parent  # the package's config tree


def compose_config(name: str, *overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """A config of the package's tree composed with Hydra's compose API (no run, no run dir). Hydra's work,
    the tests' tool: not measured by coverage (the runs of train.py measure gdlab's resolvers)."""
    with (
        unmeasured_here(),
        initialize_config_module(config_module=gdlab.conf.CONFIG_PACKAGE, version_base="1.3"),
    ):
        return compose(name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def make_cfg(output_dir: Path | str, *overrides: str) -> DictConfig:
    """The composed train config, writing into ``output_dir`` (no Hydra run dir needed)."""
    return compose_config("train", f"paths.output_dir={output_dir}", *overrides)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """A scalar series of a run's TensorBoard events as TensorBoard shows it: one value per step (the
    last written: the run's HParams entry writes its final metrics again at the last step), by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    with unmeasured_here():  # TensorBoard's reader, pure Python: tracing would only slow it
        events.Reload()
    return sorted({e.step: e.value for e in events.Scalars(tag)}.items())


def train_in_process(monkeypatch, *args: str) -> int:
    """``python train.py ARGS`` in this process (the real entry point, Hydra included); its exit status."""
    from gdlab import entry

    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    try:
        entry.train_main()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


# coverage.py's `patch = subprocess` (pyproject.toml) can measure every Python process the tests start, through
# this variable; tracing slows every line a process runs. The processes the tests start run unmeasured
# unless the test asks (``measured=True``): those whose processes run lines that no test reaches in its own
# process (DDP's ranks and torchrun, a command that fails before it imports Lightning). The other commands
# (the command line as typed, killed and resumed runs, sweeps, the feature matrix, the benchmark's timed
# children, a built wheel) run lines the in-process tests measure already: `pytest --cov --cov-context=test`
# shows which test reaches which line. Without the variable (a renamed one) every process is measured.
COVERAGE_SUBPROCESS_ENV = "COVERAGE_PROCESS_CONFIG"


def child_env(extra: dict[str, str] | None = None, *, measured: bool = False) -> dict[str, str]:
    """The environment for a process a test starts: this one's plus ``extra``, measured by coverage.py only
    with ``measured`` (and only when this process is measured: coverage.py sets the variable when it starts)."""
    env = {**os.environ, **(extra or {})}
    if not measured:
        env.pop(COVERAGE_SUBPROCESS_ENV, None)
    return env


@contextlib.contextmanager
def unmeasured_here() -> Iterator[None]:
    """Code run inside is not measured by coverage.py (when it measures this process): for many in-process
    runs of lines that other tests measure already (the fuzz's drawn runs), where tracing would double
    their time. Through coverage's public ``Coverage.current()``, ``stop()`` and ``start()``: a pytest-xdist
    worker holds more than one (pytest-cov's and the one `patch = subprocess` starts in every new Python
    process); stopping the current one resumes the one before it, so every one is stopped."""
    import coverage

    stopped: list[coverage.Coverage] = []
    while (running := coverage.Coverage.current()) is not None and running not in stopped:
        running.stop()
        stopped.append(running)
    try:
        yield
    finally:
        for running in reversed(stopped):
            running.start()


def run_train(
    *args: str,
    cwd: Path = REPO_ROOT,
    timeout: float = 300,
    script: str = "train.py",
    env: dict[str, str] | None = None,
    measured: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` (or another root script) in a subprocess; capture its output. Coverage
    measures it only when ``measured`` (see ``child_env``)."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env({"PYTHONUNBUFFERED": "1", **(env or {})}, measured=measured),
    )


def live_processes(mentioning: str, where: str = "cmdline") -> list[str]:
    """``pid: command line`` of every live (not zombie) process whose command line (``where="environ"``: its
    environment) holds ``mentioning``: what a command left running."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mentioning.encode() not in Path(f"/proc/{pid}/{where}").read_bytes():
                continue
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state != "Z":
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.fixture
def cfg_factory(tmp_path):
    """``cfg_factory(*overrides)`` -> a composed config whose run dir is ``tmp_path``."""
    return lambda *overrides: make_cfg(tmp_path, *overrides)


@pytest.fixture
def typed(tmp_path):
    """``typed(*overrides)`` composes like ``python train.py`` does, Hydra's record of the chosen options
    included, so messages read ``loss=cross_entropy`` exactly as a user would see them."""

    def compose_as_cli(*overrides):
        cfg = compose_config("train", f"paths.output_dir={tmp_path}", *overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield compose_as_cli
    HydraConfig.instance().cfg = None


@pytest.fixture(autouse=True)
def no_hydra_run_left_over():
    """Each test starts outside a Hydra run: an in-process train.py leaves Hydra's record of its run (the
    chosen options) behind, which would change how later tests' messages and HParams name the groups."""
    yield
    HydraConfig.instance().cfg = None  # Hydra has no public way to forget a run


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """An in-process train.py installs gdlab's stop-signal handlers (and may have received a signal):
    each test starts with pytest's handlers and no signal received."""
    import signal

    from gdlab.runs import signals

    kept = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)
    signals.reset()
