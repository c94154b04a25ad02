"""Generated bad inputs through the real entry point (`python train.py`, in this process). A draw picks a
data x model x loss combination, then (most of the time) an option of one of the other groups (an optimizer,
a scheduler, a callback set, a trainer, a debug mode, an experiment, a logger, the module), then a leaf
setting of the config those compose to (read from the config itself, so a new option or setting is covered
without editing this file), and gives it a wrong type, zero, a negative, nan, inf, a huge number, an empty
string or list, a list of the wrong length; or it names an unknown key, or an unknown option of any group
(optional ones included). Each run (tiny data, at most 3 steps, no logger) ends in exactly one of: exit
status 0 with finite metrics, or exit status 1 with one error line on stderr naming the setting by its full
key. Never a run past its budget, never a file outside paths.root, never "completed" over a NaN.
tests/test_bad_inputs.py checks the command line itself on the listed cases."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import gdlab.conf
from tests.conftest import compose_config, unmeasured_here

pytestmark = pytest.mark.slow  # the fast tier stays fast; CI runs it

# The budget every drawn run trains under (the drawn option and setting come last and may change one of these).
BUDGET = ("trainer.max_epochs=1", "trainer.max_steps=3", "logger=none", "callbacks=minimal", "trainer=cpu")
CSV_ROWS = "a,b,y\n" + "".join(f"{i % 7},{i % 5},{i % 3}\n" for i in range(40))
COMBOS = {
    "linear": ("data.n_samples=60",),
    "polynomial-mlp": ("data=polynomial", "data.n_samples=60", "model=mlp", "model.hidden_sizes=[4]"),
    "digits-cross_entropy": ("data=digits", "loss=cross_entropy", "data.batch_size=32"),
    "digits-cnn": (
        "data=digits",
        "loss=cross_entropy",
        "model=cnn",
        "model.channels=[2]",
        "model.hidden_size=4",
    ),
    "csv": ("data=csv", "data.path={csv}", "data.target=y"),
}
# Settings that say where to write or what to print, not what to train: drawn values there are covered
# by the bad-input table (an empty paths.root, resume and ckpt_path of every kind).
SKIP = ("hydra", "paths.", "resume", "ckpt_path", "verbose", "print_config")
PLACES = (
    "dirpath",
    "default_root_dir",
    "save_dir",
    "data_dir",
)  # where files go: a path is the user's choice
# The groups whose options are drawn (data, model and loss come with the combination). Left out, with why:
# the options that start a sweep (their jobs: tests/test_multirun.py, tests/test_experiments.py), need a
# GPU or start processes (tests/test_cuda.py, tests/test_ddp.py), or a network or an account (MNIST's
# download, MLflow, W&B: tests/test_data.py, tests/test_loggers.py).
OPTION_GROUPS = ("optimizer", "scheduler", "callbacks", "trainer", "debug", "experiment", "logger", "module")
LEFT_OUT = {
    "experiment": ("lr_regimes", "lr_scan", "nonconvex"),
    "trainer": ("gpu", "ddp", "ddp_cpu"),
    "logger": ("mlflow", "wandb"),
}
# What an option needs to run under BUDGET: the experiments set the linear data's own settings (and the
# pictures that callbacks=minimal leaves out); the warm-up of warmup_cosine (2 epochs) must end before its
# total (trainer.max_epochs, 1 here); the lr monitor writes to a logger; early stopping needs a validation
# before max_steps ends the epoch.
FITS = {"experiment": ("linear",)}
NEEDS = {
    "scheduler=warmup_cosine": ("scheduler.total_epochs=3",),
    "experiment=diverge": ("callbacks.pictures=null",),
    "experiment=lecture": ("callbacks.pictures=null",),
    "callbacks=lr_monitor": ("logger=csv",),
    "callbacks=early_stopping": ("trainer.limit_train_batches=3",),
}
# Every group, optional ones included, for the unknown-option draws.
GROUPS = ("data", "model", "loss", *OPTION_GROUPS, "hparams_search", "local", "+local", "paths")
BAD_VALUES = [
    "abc",
    "0",
    "-1",
    "-7.5",
    "nan",
    "inf",
    "-inf",
    "1e15",
    "1000000000000000",
    "''",
    "[]",
    "[1,2,3]",
]
BAD_VALUES += ["null", "true", "{a: 1}"]
SECONDS_PER_RUN = 60


@functools.cache
def csv_file() -> str:
    """A small csv file (3 columns, 40 rows) for the csv combination, written once per test process."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="gdlab-fuzz-")) / "table.csv"
    path.write_text(CSV_ROWS)
    return str(path)


def combo_args(combo: str) -> tuple[str, ...]:
    return tuple(arg.replace("{csv}", csv_file()) for arg in COMBOS[combo])


def option_args(option: str) -> tuple[str, ...]:
    return (option, *NEEDS.get(option, ())) if option else ()


@functools.cache
def options() -> list[str]:
    """Every option of the drawn groups as ``group=option``, less those left out (see LEFT_OUT)."""
    folder = Path(gdlab.conf.__file__).parent
    found = []
    for group in OPTION_GROUPS:
        names = sorted(p.stem for p in (folder / group).glob("*.yaml"))
        found += [f"{group}={name}" for name in names if name not in LEFT_OUT.get(group, ())]
    return found


def fits(combo: str, option: str) -> bool:
    group = option.partition("=")[0]
    return not option or combo in FITS.get(group, (combo,))


def _leaves(node, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        key = f"{prefix}{name}"
        if str(name).startswith("_") or key.startswith(SKIP) or str(name) in PLACES:
            continue
        keys += _leaves(value, f"{key}.") if OmegaConf.is_dict(value) else [key]
    return keys


@functools.cache
def _composed(combo: str, option: str = "") -> list[str]:
    overrides = ("paths.output_dir=/x", *BUDGET, *combo_args(combo), *option_args(option))
    return _leaves(compose_config("train", *overrides))


# Groups whose options set keys anywhere in the config (``# @package _global_``).
GLOBAL_GROUPS = ("debug", "experiment")


@functools.cache
def leaves(combo: str, option: str = "") -> list[str]:
    """The leaf settings of the config the combination and the option compose to (on first use). An
    option's own subtree does not depend on the data: it is composed once, not once per combination
    (a composition costs about 0.12 s of CPU)."""
    group = option.partition("=")[0]
    if not option or group in GLOBAL_GROUPS:
        return _composed(combo, option)
    own = [key for key in _composed("linear", option) if key.startswith(f"{group}.")]
    return [key for key in _composed(combo) if not key.startswith(f"{group}.")] + own


@st.composite
def drawn_inputs(draw) -> tuple[str, str, str]:
    """(combination, option override or "", the drawn override)."""
    combo = draw(st.sampled_from(sorted(COMBOS)))
    kind = draw(st.sampled_from(["leaf"] * 8 + ["unknown-key", "unknown-option"]))
    if kind == "unknown-option":
        return combo, "", f"{draw(st.sampled_from(GROUPS))}=no_such_option"
    fitting = [o for o in options() if fits(combo, o)]
    option = draw(st.sampled_from(["", "", *fitting]))  # a third of the draws on the combination alone
    key = draw(st.sampled_from(leaves(combo, option)))
    if kind == "unknown-key":
        key = key.rsplit(".", 1)[0] + ".no_such_setting"
    return combo, option, f"{key}={draw(st.sampled_from(BAD_VALUES))}"


class _TooLong(BaseException):  # not an Exception: the entry point must not turn it into an error line
    pass


def _stop(*_):
    raise _TooLong


def _run(root: Path, combo: str, option: str, override: str) -> tuple[int, str]:
    """``python train.py <budget> <combination> <option> <override>`` in this process (the real entry point:
    Hydra's command line, the run directory, the one-line errors): its exit status and what it printed to
    stderr."""
    from gdlab import entry

    args = (*BUDGET, *combo_args(combo), *option_args(option), f"paths.root={root}", override)
    previous = signal.signal(signal.SIGALRM, _stop)
    signal.alarm(SECONDS_PER_RUN)
    stderr = io.StringIO()
    code = 0
    try:
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
            patch.setattr(sys, "argv", ["train.py", *args])
            entry.train_main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except _TooLong:
        pytest.fail(f"{override} ({combo}) ran past {SECONDS_PER_RUN} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        HydraConfig.instance().cfg = None  # the next draw starts outside a Hydra run, as a new process would
    return code, stderr.getvalue()


# Found by this test, kept as explicit cases (each a test of its own):
FOUND = [
    ("linear", "", "data.n_samples=abc"),  # was a TypeError from inside the datamodule
    ("linear", "", "data.noise_std=nan"),  # ended "diverged", blaming the learning rate
    ("linear", "", "optimizer.lr=1e15"),  # completed with nan val/test metrics
    ("linear", "", "trainer.max_epochs=-1"),  # with max_steps -1: trained forever
    ("linear", "", "seed=null"),  # a TypeError from the range check
    ("linear", "", "trainer.accelerator=1e15"),  # Lightning's message without the setting
    ("polynomial-mlp", "", "model.hidden_sizes=[]"),  # trained a linear model silently
    ("digits-cross_entropy", "", "callbacks.model_checkpoint.monitor=''"),  # an assert inside fit
    ("linear", "", "trainer.check_val_every_n_epoch=0"),  # a modulo by zero inside fit
    ("linear", "", "data.shuffle_seed=1000000000000000"),  # an overflow inside fit
    # "trainer: MemoryError" (Lightning lists the devices)
    ("linear", "", "trainer.devices=1000000000000000"),
    # "data: RuntimeError: [enforce fail at alloc_cpu.cpp]"
    ("linear", "", "data.n_samples=1000000000000000"),
    ("polynomial-mlp", "", "data.degree=1000000000000000"),  # the same, from the powers of x
    ("linear", "", "trainer.num_nodes=1000000000000000"),  # a child process, its line not in this process
    ("linear", "", "trainer.limit_train_batches=-1"),  # "trainer: You have passed invalid value -1 ..."
    ("linear", "scheduler=step", "scheduler.gamma=-1"),  # a negative lr, then advice to lower optimizer.lr
    ("linear", "scheduler=step", "scheduler.step_size=0"),  # a ZeroDivisionError inside fit
    ("linear", "scheduler=plateau", "scheduler.factor=1e15"),  # "scheduler: Factor should be < 1.0."
    ("linear", "optimizer=nesterov", "optimizer.momentum=0"),  # "optimizer: Nesterov momentum requires ..."
    ("linear", "", "trainer.accumulate_grad_batches=0"),  # a ZeroDivisionError inside fit
    ("linear", "", "trainer.limit_train_batches=0"),  # 0 steps, recorded "completed"
    ("polynomial-mlp", "", "model.hidden_sizes=[1000000000000000]"),  # an allocator's error after building
    ("csv", "", "+local=no_such_option"),  # the line said local=no_such_option, not +local= as typed
    ("digits-cnn", "", "trainer.overfit_batches=-1"),  # "trainer: You have passed invalid value -1 ..."
]
# The draws are split into shards (tests of their own, each a short part of the whole) so that pytest-xdist
# spreads them over its workers: 6 x 50 drawn + the found cases, over 320 runs (the drawn ones unmeasured by
# coverage, which would double their time).
SHARDS, PER_SHARD = 6, 50


def _check(drawn: tuple[str, str, str], tmp_path_factory) -> None:
    combo, option, override = drawn
    root = tmp_path_factory.mktemp("fuzz")
    cwd = Path.cwd()
    before = _listing(cwd)
    code, err = _run(root, combo, option, override)
    assert _listing(cwd) == before, f"{override} wrote outside paths.root"
    records = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
    if code == 0:
        assert "error: " not in err, (override, err[-2000:])
        assert [r["status"] for r in records] in (["completed"], ["stopped_early"], ["diverged"]), (
            option,
            override,
            records,
        )
        record = records[0]
        if record["status"] != "diverged":
            numbers = {k: v for k, v in record.items() if k.split("/")[0] in ("train", "val", "test")}
            assert all(isinstance(v, float | int) and math.isfinite(v) for v in numbers.values()), (
                override,
                numbers,
            )
        return
    assert code == 1, (override, code, err[-2000:])
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, (override, err[-2000:])
    assert "Traceback" not in err, (override, err[-2000:])
    assert names_the_setting(lines[0], override), (override, lines[0])
    assert not re.match(r"error: \w+(Error|Exception): ", lines[0]), (override, lines[0])
    assert all(r["status"] == "failed" for r in records), (override, records)


def names_the_setting(line: str, override: str) -> bool:
    """Whether the error line names the drawn setting: by its full key (``trainer.max_epochs=-1: ...``, or
    quoted as Hydra quotes it, ``'data.no_such_setting'``), or, where one component refuses two of its
    arguments together, after that component's key as its own argument with the drawn value
    (``data.x_min=-3.0: Invalid x_min: -3.0 (must be below x_max=-7.5)`` for ``data.x_max=-7.5``). Naming
    only the group (``trainer: MemoryError``) or a longer key that ends with it does not count."""
    key, _, value = override.partition("=")
    body = line.removeprefix("error: ")
    if re.search(rf"(?<![\w.]){re.escape(key)}(=|')", body):
        return True
    node, _, argument = key.rpartition(".")
    together = rf"(?<![\w.]){re.escape(argument)}={re.escape(value)}(?![\w.])"
    return bool(node) and body.startswith(f"{node}.") and re.search(together, body) is not None


def _listing(folder: Path) -> set[str]:
    """The folder's entries, less coverage.py's and hypothesis's data (the tests' tools, not gdlab)."""
    return {name for name in os.listdir(folder) if not name.startswith((".coverage", ".hypothesis"))}


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_drawn_input_completes_or_stops_in_one_line(shard, tmp_path_factory):
    """Hypothesis draws the inputs (each shard from its own seed) and runs each; then the test says how
    many it tried (together, at least 300) and over how many options."""
    tried = []

    @seed(shard)
    @settings(max_examples=PER_SHARD, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(drawn=drawn_inputs())
    def check(drawn):
        tried.append(drawn)
        # The drawn runs run lines other tests measure already, and tracing them would double their time.
        with unmeasured_here():
            _check(drawn, tmp_path_factory)

    check()
    drawn_options = {option for _, option, _ in tried if option}
    print(
        f"\nshard {shard}: {len(tried)} drawn inputs tried ({len(set(tried))} distinct, {len(drawn_options)} options)"
    )
    assert len(tried) >= PER_SHARD and SHARDS * PER_SHARD >= 300


@pytest.mark.parametrize("found", FOUND, ids=["|".join(filter(None, case)) for case in FOUND])
def test_each_input_the_fuzz_found_completes_or_stops_in_one_line(found, tmp_path_factory):
    """The inputs the draws found, measured by coverage: each once broke the rule."""
    _check(found, tmp_path_factory)
