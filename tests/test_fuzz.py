"""Generated bad inputs: every leaf setting of the composed config of each data x model x loss combination
(read from the config itself, so a new setting is covered without editing this file) gets a wrong type,
zero, a negative, nan, inf, a huge number, an empty string or list, a list of the wrong length; plus
unknown keys and unknown group options. Each run (tiny budget; the real entry point, `python train.py`,
in this process) ends in exactly one of: exit status 0 with finite metrics, or exit status 1 with one
error line on stderr naming the setting by its full key. Never a run past its budget, never a file outside paths.root, never
"completed" over a NaN. tests/test_bad_inputs.py checks the command line itself on the listed cases."""

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
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from tests.conftest import compose_config

pytestmark = pytest.mark.slow  # the fast tier stays fast; CI runs it

# The budget every drawn run trains under (the drawn override comes last and may change one of these).
BUDGET = ("trainer.max_epochs=1", "trainer.max_steps=3", "logger=none", "callbacks=minimal", "trainer=cpu")
COMBOS = {
    "linear": ("data.n_samples=60",),
    "polynomial-mlp": ("data=polynomial", "data.n_samples=60", "model=mlp", "model.hidden_sizes=[4]"),
    "digits-cross_entropy": ("data=digits", "loss=cross_entropy", "data.batch_size=32"),
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


def _leaves(node, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        key = f"{prefix}{name}"
        if str(name).startswith("_") or key.startswith(SKIP) or str(name) in PLACES:
            continue
        keys += _leaves(value, f"{key}.") if OmegaConf.is_dict(value) else [key]
    return keys


@functools.cache
def leaves(combo: str) -> list[str]:
    """The leaf settings of the combination's composed config (composed on first use, not at collection)."""
    return _leaves(compose_config("train", "paths.output_dir=/x", *BUDGET, *COMBOS[combo]))


GROUPS = ("data", "model", "loss", "optimizer", "trainer", "logger", "callbacks", "debug", "experiment")


@st.composite
def drawn_inputs(draw) -> tuple[str, str]:
    combo = draw(st.sampled_from(sorted(COMBOS)))
    kind = draw(st.sampled_from(["leaf"] * 8 + ["unknown-key", "unknown-option"]))
    if kind == "unknown-key":
        key = draw(st.sampled_from(leaves(combo))).rsplit(".", 1)[0] + ".no_such_setting"
        return combo, f"{key}={draw(st.sampled_from(BAD_VALUES))}"
    if kind == "unknown-option":
        return combo, f"{draw(st.sampled_from(GROUPS))}=no_such_option"
    return combo, f"{draw(st.sampled_from(leaves(combo)))}={draw(st.sampled_from(BAD_VALUES))}"


class _TooLong(BaseException):  # not an Exception: the entry point must not turn it into an error line
    pass


def _stop(*_):
    raise _TooLong


def _run(root: Path, combo: str, override: str) -> tuple[int, str]:
    """``python train.py <budget> <override>`` in this process (the real entry point: Hydra's command line,
    the run directory, the one-line errors): its exit status and what it printed to stderr."""
    from gdlab import entry

    args = (*BUDGET, *COMBOS[combo], f"paths.root={root}", override)
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


# Found by this test, kept as explicit cases (run by the first shard):
FOUND = [
    ("linear", "data.n_samples=abc"),  # was a TypeError from inside the datamodule
    ("linear", "data.noise_std=nan"),  # ended "diverged", blaming the learning rate
    ("linear", "optimizer.lr=1e15"),  # completed with nan val/test metrics
    ("linear", "trainer.max_epochs=-1"),  # with max_steps -1: trained forever
    ("linear", "seed=null"),  # a TypeError from the range check
    ("linear", "trainer.accelerator=1e15"),  # Lightning's message without the setting
    ("polynomial-mlp", "model.hidden_sizes=[]"),  # trained a linear model silently
    ("digits-cross_entropy", "callbacks.model_checkpoint.monitor=''"),  # an assert inside fit
    ("linear", "trainer.check_val_every_n_epoch=0"),  # a modulo by zero inside fit
    ("linear", "data.shuffle_seed=1000000000000000"),  # an overflow inside fit
    ("linear", "trainer.devices=1000000000000000"),  # "trainer: MemoryError" (Lightning lists the devices)
    ("linear", "data.n_samples=1000000000000000"),  # "data: RuntimeError: [enforce fail at alloc_cpu.cpp]"
    ("polynomial-mlp", "data.degree=1000000000000000"),  # the same, from the powers of x
    ("linear", "trainer.num_nodes=1000000000000000"),  # a child process, its line not in this process
    ("linear", "trainer.limit_train_batches=-1"),  # "trainer: You have passed invalid value -1 ..."
]
# The draws are split into shards (tests of their own) so that pytest-xdist runs them side by side.
SHARDS, PER_SHARD = 4, 75


def _check(drawn: tuple[str, str], tmp_path_factory) -> None:
    combo, override = drawn
    root = tmp_path_factory.mktemp("fuzz")
    cwd = Path.cwd()
    before = _listing(cwd)
    code, err = _run(root, combo, override)
    assert _listing(cwd) == before, f"{override} wrote outside paths.root"
    records = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
    if code == 0:
        assert "error: " not in err, (override, err[-2000:])
        assert [r["status"] for r in records] in (["completed"], ["diverged"]), (override, records)
        record = records[0]
        if record["status"] == "completed":
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
    """The folder's entries, less coverage.py's data files (the measuring of the tests, not of gdlab)."""
    return {name for name in os.listdir(folder) if not name.startswith(".coverage")}


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_drawn_input_completes_or_stops_in_one_line(shard, tmp_path_factory):
    """Hypothesis draws the inputs (each shard from its own seed) and runs each; then the test says how
    many it tried (together, the shards try at least 300)."""
    tried = []

    @seed(shard)
    @settings(max_examples=PER_SHARD, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(drawn=drawn_inputs())
    def check(drawn):
        tried.append(drawn)
        _check(drawn, tmp_path_factory)

    for found in FOUND if shard == 0 else []:
        check = example(drawn=found)(check)
    check()
    print(f"\nshard {shard}: {len(tried)} drawn inputs tried ({len(set(tried))} distinct)")
    assert len(tried) >= PER_SHARD and SHARDS * PER_SHARD >= 300
