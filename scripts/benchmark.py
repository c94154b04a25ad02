"""Side-by-side benchmark: gdlab's real training path vs a hand-written PyTorch loop, and its parts.

    python scripts/benchmark.py                 # all sections, medians of 5 alternating repeats
    python scripts/benchmark.py --quick         # tiny sizes, one repeat: proves it runs (about a minute)
    python scripts/benchmark.py --only training --repeats 7
    python scripts/benchmark.py --profile mlp   # cProfile of gdlab's training steps, top functions

Sections (each compares variants on the same model, data, step count, batch size and thread count,
alternating the variants within each repeat):
  training   gdlab (composed config -> gdlab.factory.build -> Trainer.fit, logger and callbacks as in the
             default config) vs a hand-written loop (index_select batches, forward, backward, step);
  batching   gdlab.data.InMemoryBatches vs DataLoader(TensorDataset) over one shuffled epoch;
  optimizer  PlainSGD.step() vs torch.optim.SGD (default and foreach), parameters asserted bitwise equal;
  startup    wall time of a tiny `python train.py` vs `python -c "import lightning"`, top import costs;
  mnist      one MNIST epoch (60k images the script writes as IDX files) vs `import lightning`: wall time,
             peak RSS and MNISTDataModule.setup() of a first run (writes the decoded cache) and a second;
  vectorized hydra/launcher=vectorized: the lessons nonconvex and lr_regimes against the basic launcher (the
             same steps), a 64-point lr sweep of experiment=lecture against one run of it, and model-steps
             per second of stacked members against the hand loop training them one after another.
  loggers    the default `python train.py` with each experiment logger vs TensorBoard (the default):
             none, csv, and MLflow and W&B (offline) where the `loggers` extra is installed.

The Markdown table goes to stdout and to outputs/benchmarks/benchmark-<time>.md (and latest.md).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import io
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))  # run from a checkout without installing

from gdlab.data import InMemoryBatches, InMemoryDataModule  # noqa: E402
from gdlab.optim import PlainSGD  # noqa: E402


@dataclass
class Row:
    """One variant of one comparison: its repeated measurements and how to read them."""

    comparison: str
    variant: str
    values: list[float] = field(default_factory=list)
    unit: str = "samples/s"  # "samples/s" (higher is better) or "ms" / "us" / "s" (lower is better)
    baseline: bool = False  # the reference the other rows of the comparison are divided by
    note: str = ""
    batch_size: int = 0  # training rows: also shown as milliseconds per optimizer step
    target: str = ""  # the ratio this variant should reach, e.g. ">= 0.50x" or "<= 1.25x"

    @property
    def median(self) -> float:
        return statistics.median(self.values)


# ---------------------------------------------------------------------------------------------
# Data the benchmark needs that the config groups do not have


class SyntheticImages(InMemoryDataModule):
    """Random 1x28x28 images with 10 classes: the shape of MNIST without files on disk."""

    task = "classification"

    def __init__(
        self, n_train: int = 2560, n_eval: int = 256, batch_size: int | None = 256, **kwargs
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.n_train, self.n_eval = n_train, n_eval

    def build(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        n = self.n_train + 2 * self.n_eval
        x, y = torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        a, b = self.n_train, self.n_train + self.n_eval
        return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}

    @property
    def num_outputs(self) -> int:
        return 10


# ---------------------------------------------------------------------------------------------
# 1. gdlab's real training path vs a hand-written loop


@dataclass
class Case:
    """One training comparison: config overrides plus the sizes that fix the work done."""

    name: str
    overrides: list[str]
    batch_size: int
    steps_per_epoch: int
    epochs: int  # timed epochs; one more runs first as warm-up in both variants
    nodes: dict = field(default_factory=dict)  # config nodes replaced after composing (e.g. data, model)
    target: str = ""  # gdlab's throughput relative to the hand loop


def linear_case(batch_size: int, steps: int, epochs: int) -> Case:
    n = batch_size * steps
    # val/test fractions of 5% each: n_samples chosen so the train split is exactly `steps` batches.
    total = next(t for t in range(round(n / 0.9) - 5, round(n / 0.9) + 5) if t - 2 * round(t * 0.05) == n)
    return Case(
        f"linear (5 features) batch {batch_size}",
        [f"data.n_samples={total}", "data.val_fraction=0.05", "data.test_fraction=0.05"],
        batch_size,
        steps,
        epochs,
        target=">= 0.50x",
    )


def training_cases(quick: bool) -> list[Case]:
    steps, epochs = (5, 1) if quick else (100, 3)
    cnn_steps = 5 if quick else 10
    images = {"_target_": f"{__name__}.SyntheticImages", "n_train": 256 * cnn_steps, "seed": 0}
    mlp = linear_case(1024, 5 if quick else 30, epochs)
    return [
        linear_case(64, steps, epochs),
        Case(
            "MLP 16-256-256-1 batch 1024",
            [*mlp.overrides, "data.n_features=16", "model=mlp", "model.hidden_sizes=[256,256]"],
            1024,
            mlp.steps_per_epoch,
            epochs,
            target=">= 0.90x",
        ),
        Case(
            "CNN 1x28x28 batch 256",
            ["model=cnn", "loss=cross_entropy"],
            256,
            cnn_steps,
            epochs,
            {"data": images},
            target=">= 0.95x",
        ),
    ]


def compose_cfg(output_dir: str, overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="gdlab.conf", version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


def epoch_timer(hand: HandLoop | None = None, hand_first: bool = False):
    """A callback timing the training part of every epoch (batches, hooks, logging, progress bar)
    up to validation: validation and checkpoint writing run once per epoch and are left out.

    With ``hand``, one epoch of the hand-written loop runs between gdlab's epochs, outside gdlab's
    timed window (before each gdlab epoch when ``hand_first``, else after it): the two variants
    alternate every few hundred milliseconds, so a machine whose load drifts slows both alike."""
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.hand_seconds: list[float] = []
            self._start: float | None = None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if hand is not None and hand_first:
                self.hand_seconds.append(hand.run_epoch())
            self._start = time.perf_counter()

        def _stop(self) -> None:
            if self._start is not None:
                self.seconds.append(time.perf_counter() - self._start)
                self._start = None

        def on_validation_start(self, trainer, pl_module) -> None:
            self._stop()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._stop()
            if hand is not None and not hand_first:
                self.hand_seconds.append(hand.run_epoch())

    return EpochTimer()


def build_gdlab(case: Case, extra: list[str], output_dir: str):
    """The datamodule, module and trainer that `python train.py <overrides>` would build."""
    import lightning as L
    from omegaconf import open_dict

    from gdlab.factory import build

    cfg = compose_cfg(
        output_dir,
        [
            *case.overrides,
            f"data.batch_size={case.batch_size}",
            f"trainer.max_epochs={case.epochs + 1}",
            "trainer.accelerator=cpu",
            *extra,
        ],
    )
    with open_dict(cfg):
        for key, node in case.nodes.items():
            cfg[key] = {**node, **({"batch_size": case.batch_size} if key == "data" else {})}
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer = build(cfg)
    return cfg, datamodule, module, trainer


def run_gdlab(
    case: Case, extra: list[str], hand: HandLoop | None = None, hand_first: bool = False
) -> tuple[list[float], list[float]]:
    """Seconds of each timed epoch of a real gdlab fit, and of the interleaved hand-loop epochs (the
    first epoch of each is warm-up and dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        _, datamodule, module, trainer = build_gdlab(case, extra, tmp)
        steps = len(datamodule.train_dataloader())
        assert steps == case.steps_per_epoch, (case.name, steps, case.steps_per_epoch)
        timer = epoch_timer(hand, hand_first)
        trainer.callbacks.append(timer)
        # The progress bar still formats every refresh; its text goes nowhere instead of over the table.
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            trainer.fit(module, datamodule=datamodule)
        assert trainer.global_step == steps * (case.epochs + 1), trainer.global_step
        return timer.seconds[1:], timer.hand_seconds[1:]


class HandLoop:
    """The same model (same initial weights), data, loss, optimizer, batch size and step count,
    written as the loop a researcher types: shuffle, index_select a batch, forward, backward, step.
    One epoch per ``run_epoch()`` call, so its epochs can interleave with gdlab's."""

    def __init__(self, case: Case) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cfg, datamodule, module, _ = build_gdlab(case, ["logger=none", "callbacks=none"], tmp)
        self.net, self.loss_fn = copy.deepcopy(module.net), copy.deepcopy(module.loss_fn)
        self.x, self.y = datamodule.splits["train"]
        self.x = datamodule.inputs(self.x)  # the model's inputs (images: scaled and standardised)
        self.optimizer = PlainSGD(self.net.parameters(), lr=cfg.optimizer.lr)
        self.case, self.epoch = case, 0

    def run_epoch(self) -> float:
        net, loss_fn, optimizer, x, y = self.net, self.loss_fn, self.optimizer, self.x, self.y
        bs = self.case.batch_size
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.epoch))
        for i in range(self.case.steps_per_epoch):
            idx = order[i * bs : (i + 1) * bs]
            loss = loss_fn(net(x.index_select(0, idx)), y.index_select(0, idx))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.epoch += 1
        return time.perf_counter() - start


def warm_up(case: Case, epochs: int = 3) -> None:
    """Untimed epochs before any timing: the first ones of a process run several times slower while the
    allocator settles (glibc serves large tensors by mmap until its threshold adapts)."""
    hand = HandLoop(case)
    for _ in range(epochs):
        hand.run_epoch()


def measure(case: Case, extra: list[str], hand_row: Row, row: Row, repeat: int) -> None:
    """One gdlab fit with the hand loop's epochs interleaved; per-epoch throughputs into the rows."""
    per_epoch = case.batch_size * case.steps_per_epoch
    gdlab_seconds, hand_seconds = run_gdlab(case, extra, HandLoop(case), hand_first=repeat % 2 == 1)
    row.values += [per_epoch / t for t in gdlab_seconds]
    hand_row.values += [per_epoch / t for t in hand_seconds]


def bench_training(repeats: int, quick: bool, extra: list[str]) -> list[Row]:
    rows = []
    for case in training_cases(quick):
        hand = Row(f"train: {case.name}", "hand-written loop", baseline=True, batch_size=case.batch_size)
        gd = Row(
            f"train: {case.name}",
            "gdlab train.py path",
            note=" ".join(extra),
            batch_size=case.batch_size,
            target=case.target,
        )
        warm_up(case, 1 if quick else 3)
        for r in range(repeats):
            measure(case, extra, hand, gd, r)
        rows += [hand, gd]
    return rows


def default_callbacks() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return list(compose_cfg(tmp, []).get("callbacks") or {})


def bench_callbacks(repeats: int, quick: bool, extra: list[str]) -> list[Row]:
    """Where gdlab's per-step time goes: the default config with one callback (or the logger) off at a
    time, and bare Lightning (no callbacks, no logger), against the hand-written loop."""
    rows = []
    for case in training_cases(quick)[:1]:
        comparison, bs = f"per-step cost: {case.name}", case.batch_size
        hand = Row(comparison, "hand-written loop", baseline=True, batch_size=bs)
        variants: list[tuple[Row, list[str]]] = [
            (Row(comparison, "gdlab, default config", batch_size=bs), [])
        ]
        # (label, overrides): one piece off at a time; the "with" rows undo one of gdlab's own savings.
        changes = (
            [] if quick else [(f"without {name}", [f"callbacks.{name}=null"]) for name in default_callbacks()]
        )
        if not quick:
            changes += [
                ("without the logger (logger=none)", ["logger=none"]),
                ("with Lightning's default profiler (trainer.profiler=null)", ["trainer.profiler=null"]),
                ("with per-step values written every step (log_flush_steps=1)", ["log_flush_steps=1"]),
            ]
        changes.append(("bare Lightning (callbacks=none logger=none)", ["callbacks=none", "logger=none"]))
        variants += [(Row(comparison, label, batch_size=bs), overrides) for label, overrides in changes]
        warm_up(case, 1 if quick else 3)
        for r in range(repeats):
            shift = r % len(variants)  # rotate the order so no variant always runs first
            for row, overrides in variants[shift:] + variants[:shift]:
                measure(case, [*extra, *overrides], hand, row, r)
        rows.append(hand)
        rows += [row for row, _ in variants]
    return rows


# ---------------------------------------------------------------------------------------------
# 2. In-memory batching vs DataLoader(TensorDataset)


def bench_batching(repeats: int, quick: bool) -> list[Row]:
    from torch.utils.data import DataLoader, TensorDataset

    rows = []
    n = 4096 if quick else 65536
    x, y = torch.randn(n, 16), torch.randn(n, 1)
    for bs in (64, 1024):
        ours = InMemoryBatches(x, y, batch_size=bs, shuffle=True, seed=0)
        theirs = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
        a = Row(f"batching: one shuffled epoch, batch {bs}", "DataLoader(TensorDataset)", baseline=True)
        b = Row(f"batching: one shuffled epoch, batch {bs}", "gdlab InMemoryBatches")
        for r in range(repeats):
            pair = [(a, theirs), (b, ours)]
            for row, loader in pair if r % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                count = sum(len(xb) for xb, _ in loader)
                row.values.append(count / (time.perf_counter() - start))
                assert count == n
        rows += [a, b]
    return rows


# ---------------------------------------------------------------------------------------------
# 3. PlainSGD.step() vs torch.optim.SGD


def model_with_tensors(n_tensors: int) -> nn.Module:
    """An MLP whose parameter count is ``n_tensors`` tensors (weights + biases), width 64."""
    layers = [nn.Linear(64, 64) for _ in range(n_tensors // 2)]
    return nn.Sequential(*layers)


def bench_optimizer(repeats: int, quick: bool) -> list[Row]:
    rows = []
    steps = 20 if quick else 500
    for n_tensors in (20, 200):
        torch.manual_seed(0)
        base = model_with_tensors(n_tensors)
        grads = [torch.randn_like(p) for p in base.parameters()]
        makers: dict[str, Callable] = {
            "torch.optim.SGD (default)": lambda ps: torch.optim.SGD(ps, lr=0.01),
            "torch.optim.SGD (foreach=True)": lambda ps: torch.optim.SGD(ps, lr=0.01, foreach=True),
            "gdlab PlainSGD": lambda ps: PlainSGD(ps, lr=0.01),
        }
        comparison = f"optimizer step: {n_tensors} parameter tensors"
        out = {name: Row(comparison, name, unit="us", baseline=name.endswith("(default)")) for name in makers}
        finals: dict[str, list[torch.Tensor]] = {}
        for r in range(repeats):
            order = list(makers) if r % 2 == 0 else list(makers)[::-1]
            for name in order:
                model = copy.deepcopy(base)
                params = list(model.parameters())
                for p, g in zip(params, grads, strict=True):
                    p.grad = g.clone()
                opt = makers[name](params)
                opt.step()  # warm-up (first-call dispatch)
                start = time.perf_counter()
                for _ in range(steps):
                    opt.step()
                out[name].values.append((time.perf_counter() - start) / steps * 1e6)
                finals[name] = [p.detach().clone() for p in params]
        reference = finals["torch.optim.SGD (default)"]
        for name, final in finals.items():  # same grads, same number of steps: bitwise the same weights
            assert all(torch.equal(a, b) for a, b in zip(final, reference, strict=True)), name
        out["gdlab PlainSGD"].note = "parameters bitwise equal to torch.optim.SGD"
        out["gdlab PlainSGD"].target = "<= 0.45x" if n_tensors == 200 else ""
        rows += list(out.values())
    return rows


# ---------------------------------------------------------------------------------------------
# 4. Start-up


TINY_RUN = ["trainer.max_epochs=1", "data.n_samples=200"]  # default config otherwise: logger, callbacks


def tiny_run_cmd(root: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "train.py"), *TINY_RUN, f"paths.root={root}"]


# Spawns the command and reports its wall time and peak RSS. A child's ru_maxrss counts the memory of the
# process that forked it (its copy of the parent's pages, or with vfork the parent's own), so the
# benchmark, which holds torch and test data, would set the floor of every reading: this small
# process (~10 MB) forks instead.
MEASURE = """import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(f"{time.perf_counter() - start} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


# Children run this checkout's gdlab, as this script does, not whichever one is installed.
CHILD_PATH = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p)


def run_child(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one command, measured on its own process."""
    with tempfile.NamedTemporaryFile("r", suffix=".measure") as report:
        proc = subprocess.run(
            [sys.executable, "-c", MEASURE, report.name, *cmd],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": CHILD_PATH, **(env or {})},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")
        seconds, peak_kb = report.read().split()
    return float(seconds), float(peak_kb) / 1024  # ru_maxrss is in KB on Linux


def bench_startup(repeats: int, quick: bool) -> list[Row]:
    """Whole commands as a user runs them, side by side with ``python -c "import lightning"``."""
    train_py = [sys.executable, str(REPO_ROOT / "train.py")]
    default = TINY_RUN if quick else []
    rates = (0.01, 0.1) if quick else (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
    lr_sweep = "optimizer.lr=" + ",".join(str(v) for v in rates)
    comparison, memory = "start-up: wall time", "start-up: peak memory (RSS)"
    commands = {
        "import lightning": ([sys.executable, "-c", "import lightning"], ""),
        "help": ([*train_py, "--help"], "<= 0.30x"),
        "cfg": ([*train_py, "--cfg", "job"], "<= 0.30x"),
        "default": ([*train_py, *default], "<= 1.25x"),
        "sweep": ([*train_py, "-m", lr_sweep, *default], ""),
    }
    labels = {
        "import lightning": 'python -c "import lightning"',
        "help": "python train.py --help",
        "cfg": "python train.py --cfg job",
        "default": f"python train.py {' '.join(default)}".rstrip() + " (the default run)",
        "sweep": f"python train.py -m optimizer.lr=<{len(rates)} values>"
        + (f" {' '.join(default)}" if default else ""),
    }
    walls = {
        k: Row(comparison, labels[k], unit="s", baseline=k == "import lightning", target=t)
        for k, (_, t) in commands.items()
    }
    peaks = {
        k: Row(memory, labels[k], unit="MB", baseline=k == "import lightning")
        for k in ("import lightning", "default")
    }
    with tempfile.TemporaryDirectory() as root:
        order = list(commands)
        for r in range(repeats):
            for name in order if r % 2 == 0 else order[::-1]:
                cmd = commands[name][0] + ([f"paths.root={root}"] if name in ("default", "sweep") else [])
                seconds, peak = run_child(cmd, REPO_ROOT)
                walls[name].values.append(seconds)
                if name in peaks:
                    peaks[name].values.append(peak)
    return [*walls.values(), *peaks.values()]


# ---------------------------------------------------------------------------------------------
# 5. MNIST: loading 60k images and one epoch, from MNIST-format files the script writes itself


MNIST_RUN = [
    "data=mnist",
    "data.download=false",
    "model=mlp",
    "model.hidden_sizes=[64,128,64]",
    "loss=cross_entropy",
    "trainer.max_epochs=1",
    "trainer=cpu",
]
# One child process that times MNISTDataModule.setup() (checksums, decoding or the cache, split, statistics).
MNIST_LOAD = """import json, sys, time
from gdlab.data import MNISTDataModule
dm = MNISTDataModule(data_dir=sys.argv[1], md5=json.loads(sys.argv[2]), download=False)
start = time.perf_counter()
dm.setup()
print(time.perf_counter() - start, file=open(sys.argv[3], "w"))
"""


def write_mnist_files(folder: Path, n_train: int, n_test: int) -> dict[str, str]:
    """The four MNIST files with random digits-like images (about 19% of pixels lit, as in MNIST, so the
    gzipped files are MNIST's size): name.gz -> md5."""
    from gdlab.data.idx import md5sum, write_idx

    gen = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:
        x = torch.randint(1, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        return x * (torch.rand(n, 28, 28, generator=gen) < 0.19)

    arrays = {
        "train-images-idx3-ubyte.gz": images(n_train),
        "train-labels-idx1-ubyte.gz": torch.randint(0, 10, (n_train,), generator=gen, dtype=torch.uint8),
        "t10k-images-idx3-ubyte.gz": images(n_test),
        "t10k-labels-idx1-ubyte.gz": torch.randint(0, 10, (n_test,), generator=gen, dtype=torch.uint8),
    }
    return {name: md5sum(write_idx(folder / name, array)) for name, array in arrays.items()}


def bench_mnist(repeats: int, quick: bool) -> list[Row]:
    """``python train.py data=mnist`` (MLP 784-64-128-64-10, batch 64, one epoch) on 60k generated images,
    a first run (decodes the files, writes the cache) and a second (reads it), against ``import lightning``."""
    import json

    from gdlab.data.idx import CACHE_SUFFIX

    n_train, n_test = (2000, 1000) if quick else (60000, 10000)
    what = f"mnist {n_train // 1000}k, 1 epoch MLP 784-64-128-64-10 batch 64"
    lightning = 'python -c "import lightning"'
    walls = [
        Row(f"{what}: wall time", lightning, unit="s", baseline=True),
        Row(f"{what}: wall time", "python train.py data=mnist ..., first run (writes the cache)", unit="s"),
        Row(f"{what}: wall time", "the same, second run (reads the cache)", unit="s", target="<= 1.40x"),
    ]
    peaks = [
        Row(f"{what}: peak memory (RSS)", lightning, unit="MB", baseline=True),
        Row(f"{what}: peak memory (RSS)", "first run", unit="MB"),
        Row(f"{what}: peak memory (RSS)", "second run", unit="MB", target="<= 500 MB"),
    ]
    loads = [
        Row(
            f"{what}: MNISTDataModule.setup()",
            "first run (decodes, writes the cache)",
            unit="s",
            baseline=True,
        ),
        Row(f"{what}: MNISTDataModule.setup()", "second run (reads the cache)", unit="s", target="<= 0.2 s"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mnist"
        data.mkdir()
        md5 = write_mnist_files(data, n_train, n_test)
        md5_arg = "{" + ",".join(f"{k}: {v}" for k, v in md5.items()) + "}"
        train = [sys.executable, str(REPO_ROOT / "train.py"), *MNIST_RUN, f"data.data_dir={data}"]
        train += [f"data.md5={md5_arg}", f"paths.root={tmp}/root"]
        load = [sys.executable, "-c", MNIST_LOAD, str(data), json.dumps(md5)]  # run_child sets PYTHONPATH
        timing = Path(tmp) / "load_seconds"
        for _ in range(repeats):
            seconds, peak = run_child([sys.executable, "-c", "import lightning"], REPO_ROOT)
            walls[0].values.append(seconds)
            peaks[0].values.append(peak)
            for cache in data.glob(f"*{CACHE_SUFFIX}"):  # the first run of each pair finds no cache
                cache.unlink()
            for run in range(2):
                run_child([*load, str(timing)], REPO_ROOT)
                loads[run].values.append(float(timing.read_text()))
            for cache in data.glob(f"*{CACHE_SUFFIX}"):
                cache.unlink()
            for run in range(2):
                seconds, peak = run_child(train, REPO_ROOT)
                walls[run + 1].values.append(seconds)
                peaks[run + 1].values.append(peak)
    return [*walls, *peaks, *loads]


# ---------------------------------------------------------------------------------------------
# 6. Experiment loggers: the default run with each, as a whole process


# W&B as the docs run it without an account: offline, nothing sent, no banner.
WANDB_OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false"}


def bench_loggers(repeats: int, quick: bool) -> list[Row]:
    """``python train.py`` with each experiment logger against the default (TensorBoard): MLflow (its SQLite
    store under paths.root, already created, and a new one) and W&B offline where the ``loggers`` extra is
    installed. The store is created by the first run under a root, so the steady state shares one root."""
    import importlib.util

    train_py = [sys.executable, str(REPO_ROOT / "train.py"), *(TINY_RUN if quick else [])]
    comparison = "loggers: " + ("a tiny run" if quick else "the default run") + ", wall time"
    has_mlflow = importlib.util.find_spec("mlflow") is not None
    variants = {"logger=tensorboard (the default)": ["logger=tensorboard"]}
    if not quick or not has_mlflow:  # --quick: tensorboard against one other
        variants["logger=none"] = ["logger=none"]
    if not quick:
        variants["logger=csv"] = ["logger=csv"]
    if has_mlflow:
        variants["logger=mlflow"] = ["logger=mlflow"]
        if not quick:
            variants["logger=mlflow, a new store (the first run under a paths.root)"] = ["logger=mlflow"]
            # what gdlab.integrations.mlflow saves: Lightning's own logger writes each step on its own
            variants["logger=mlflow with Lightning's MLFlowLogger (a write per step)"] = [
                "logger=mlflow",
                "logger.mlflow._target_=lightning.pytorch.loggers.MLFlowLogger",
                "~logger.mlflow.write_every",
            ]
    if importlib.util.find_spec("wandb") is not None and not quick:
        variants["logger=wandb (offline)"] = ["logger=wandb"]
    rows = {k: Row(comparison, k, unit="s", baseline=k.startswith("logger=tensorboard")) for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "root"
        for overrides in [] if quick else variants.values():  # warm-up, not timed: creates the MLflow store
            run_child([*train_py, *overrides, f"paths.root={shared}"], Path(tmp), WANDB_OFFLINE)
        order = list(variants)
        for r in range(repeats):
            shift = r % len(order)  # rotate the order so no variant always runs first
            for name in order[shift:] + order[:shift]:
                root = Path(tmp) / f"new-{r}" if "a new store" in name else shared
                cmd = [*train_py, *variants[name], f"paths.root={root}"]
                rows[name].values.append(run_child(cmd, Path(tmp), WANDB_OFFLINE)[0])
    return list(rows.values())


def import_costs(top: int = 10) -> tuple[float, list[tuple[str, float]]]:
    """What ``import gdlab.train`` spends, from ``python -X importtime``: the total and the self times
    summed per top-level package (torch, lightning, scipy, ...), largest first."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import gdlab.train"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    per_package: dict[str, float] = {}
    total = 0.0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            package = m.group(4).split(".")[0]
            per_package[package] = per_package.get(package, 0.0) + int(m.group(1)) / 1e6
            total += int(m.group(1)) / 1e6
    return total, sorted(per_package.items(), key=lambda kv: -kv[1])[:top]


# ---------------------------------------------------------------------------------------------
# 6. The vectorized launcher: whole sweeps, and stacked members against a hand loop


def vectorized_commands(quick: bool) -> list[tuple[str, list[str], list[str], str, str]]:
    """(comparison, reference command, vectorized command, reference label, target) of whole sweeps."""
    train_py = [sys.executable, str(REPO_ROOT / "train.py")]
    nonconvex_steps = 20 if quick else 1000
    regimes_steps = 20 if quick else 600
    seeds = 2 if quick else 6  # --quick: 2 of the lesson's 6 seeds per width
    nonconvex = [
        "experiment=nonconvex",
        f"trainer.max_epochs={nonconvex_steps}",
        f"hydra.sweeper.params.seed='range({seeds})'",
        "callbacks.stationary=null",  # the same 1000 steps for every job
        "logger=none",
    ]
    regimes = ["experiment=lr_regimes", f"trainer.max_epochs={regimes_steps}"]
    lrs = ",".join(f"{0.01 * (i + 1):.2f}" for i in range(4 if quick else 64))
    lecture = ["experiment=lecture", *(["trainer.max_epochs=5"] if quick else [])]
    basic = ["hydra/launcher=basic", "hydra/sweeper=basic"]
    return [
        (
            f"sweep: experiment=nonconvex ({4 * seeds} jobs x {nonconvex_steps} steps)",
            [*train_py, *nonconvex, *basic],
            [*train_py, *nonconvex],
            "hydra/launcher=basic",
            "<= 0.20x",
        ),
        (
            f"sweep: experiment=lr_regimes (7 jobs x {regimes_steps} steps)",
            [*train_py, *regimes, *basic],
            [*train_py, *regimes],
            "hydra/launcher=basic",
            "<= 0.35x",
        ),
        (
            f"sweep: experiment=lecture, {len(lrs.split(','))} learning rates",
            [*train_py, *lecture],
            [
                *train_py,
                "-m",
                *lecture,
                "hydra/launcher=vectorized",
                "hydra/sweeper=gdlab",
                f"optimizer.lr={lrs}",
            ],
            "one run of it",
            "<= 3.00x",
        ),
    ]


def bench_vectorized_sweeps(repeats: int, quick: bool) -> list[Row]:
    """Whole commands, wall time, alternating the two variants of each comparison."""
    rows = []
    for comparison, reference, vectorized, label, target in vectorized_commands(quick):
        base = Row(comparison, label, unit="s", baseline=True)
        ours = Row(comparison, "hydra/launcher=vectorized", unit="s", target=target)
        with tempfile.TemporaryDirectory() as root:
            pair = [(base, reference), (ours, vectorized)]
            for r in range(repeats):
                for row, cmd in pair if r % 2 == 0 else pair[::-1]:
                    seconds, _ = run_child(
                        [*cmd, f"paths.root={root}/{len(row.values)}{row is ours}"], REPO_ROOT
                    )
                    row.values.append(seconds)
        rows += [base, ours]
    return rows


@dataclass
class MemberCase:
    """Stacked members against the hand loop: one architecture, ``members`` seeds, one epoch of ``steps``."""

    name: str
    overrides: list[str]
    members: int
    batch_size: int
    steps: int
    target: str = ""


def member_cases(quick: bool) -> list[MemberCase]:
    members = 16 if quick else 256
    steps = 5 if quick else 30
    linear = linear_case(64, steps, 1).overrides
    return [
        MemberCase("linear (5 features) batch 64", linear, members, 64, steps, ">= 10.00x"),
        MemberCase(
            "MLP 16-64-64-1 batch 64",
            [*linear, "data.n_features=16", "model=mlp", "model.hidden_sizes=[64,64]"],
            members // 4,
            64,
            steps,
        ),
        MemberCase(
            "CNN [4] 8x8 digits batch 64",
            ["data=digits", "model=cnn", "model.channels=[4]", "model.hidden_size=16", "loss=cross_entropy"],
            members // 8,
            64,
            min(steps, 20),
        ),
    ]


def stacked_parts(case: MemberCase, output_dir: str):
    """The stacked module, its data and a Trainer, built as the vectorized launcher builds them."""
    import lightning as L
    from hydra.utils import instantiate

    from gdlab.callbacks.steplog import StepLog
    from gdlab.vectorized.stacked import StackedDataModule, StackedModule

    cfg = compose_cfg(
        output_dir, [*case.overrides, f"data.batch_size={case.batch_size}", "trainer.accelerator=cpu"]
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    nets = []
    for seed in range(case.members):
        L.seed_everything(seed, verbose=False)
        nets.append(
            instantiate(cfg.model, input_shape=datamodule.input_shape, num_outputs=datamodule.num_outputs)
        )
    lr = float(cfg.optimizer.lr)
    rates = {"lr": [lr] * case.members, "plain": True}
    module = StackedModule(
        nets,
        instantiate(cfg.loss),
        rates,
        instantiate(cfg.optimizer),
        datamodule.task,
        datamodule.num_outputs,
        len(datamodule.input_shape),
    )
    stacked = StackedDataModule(datamodule, list(range(case.members)))  # each member its own shuffle order
    return cfg, datamodule, nets, module, stacked, StepLog(members=case.members)


def bench_members(repeats: int, quick: bool) -> list[Row]:
    """Model-steps per second: ``members`` networks trained stacked through Lightning (the vectorized
    launcher's module, step log and data) against the hand loop training them one after another."""
    import copy as copy_module

    import lightning as L

    rows = []
    for case in member_cases(quick):
        comparison = f"model-steps/s: {case.name}, {case.members} members"
        hand = Row(comparison, "hand loop, one member after another", unit="model-steps/s", baseline=True)
        ours = Row(
            comparison, "stacked (hydra/launcher=vectorized)", unit="model-steps/s", target=case.target
        )
        with tempfile.TemporaryDirectory() as tmp:
            cfg, datamodule, nets, _, _, _ = stacked_parts(case, tmp)
            x, y = datamodule.splits["train"]
            x = datamodule.inputs(x)
            steps = min(case.steps, len(x) // case.batch_size)
            loss_fn = copy_module.deepcopy(instantiate_loss(cfg))
            for r in range(repeats + 1):  # the first repeat warms up
                # the hand loop: each member its own network, optimizer and shuffle order
                own = [copy_module.deepcopy(n) for n in nets]
                start = time.perf_counter()
                for seed, net in enumerate(own):
                    optimizer = PlainSGD(net.parameters(), lr=float(cfg.optimizer.lr))
                    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
                    for i in range(steps):
                        idx = order[i * case.batch_size : (i + 1) * case.batch_size]
                        loss = loss_fn(net(x.index_select(0, idx)), y.index_select(0, idx))
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                hand_seconds = time.perf_counter() - start
                _, _, _, module, stacked, step_log = stacked_parts(case, tmp)
                timer = epoch_timer()
                trainer = L.Trainer(
                    accelerator="cpu",
                    max_epochs=2,
                    limit_train_batches=steps,
                    limit_val_batches=0,
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                    callbacks=[step_log, timer],
                )
                trainer.fit(module, datamodule=stacked)
                if r:
                    hand.values.append(case.members * steps / hand_seconds)
                    ours.values.append(case.members * steps / timer.seconds[-1])
        rows += [hand, ours]
    return rows


def instantiate_loss(cfg):
    from hydra.utils import instantiate

    return instantiate(cfg.loss)


# ---------------------------------------------------------------------------------------------
# Profile and report


def profile_training(case_name: str, extra: list[str], top: int = 30) -> str:
    case = {c.name.split()[0].lower(): c for c in training_cases(quick=False)}[case_name]
    with tempfile.TemporaryDirectory() as tmp:
        _, datamodule, module, trainer = build_gdlab(case, extra, tmp)
        profiler = cProfile.Profile()
        profiler.enable()
        trainer.fit(module, datamodule=datamodule)
        profiler.disable()
    steps = trainer.global_step
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return f"{case.name}: {steps} steps\n{buf.getvalue()}"


def fmt(value: float, unit: str) -> str:
    if unit in ("samples/s", "model-steps/s"):
        return f"{value:,.0f}"
    return f"{value:.3f}" if unit == "s" else f"{value:.0f}" if unit == "MB" else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| comparison | variant | median | min - max | unit | ratio | target |",
        "| --- | --- | ---: | ---: | --- | ---: | --- |",
    ]
    baselines = {r.comparison: r for r in rows if r.baseline}
    for r in rows:
        base = baselines.get(r.comparison)
        ratio_value = None
        if base is None or r is base:
            ratio = "1.00x (ref)" if r is base else ""
        else:  # ratios read "x of the reference": throughput ratio, or time ratio
            ratio_value = r.median / base.median
            ratio = f"{ratio_value:.2f}x"
        notes = [r.note] if r.note else []
        if r.unit == "samples/s" and r.batch_size:
            notes.append(f"{r.batch_size / r.median * 1e3:.3f} ms/step")
        note = f" ({'; '.join(notes)})" if notes else ""
        lines.append(
            f"| {r.comparison} | {r.variant}{note} | {fmt(r.median, r.unit)} | "
            f"{fmt(min(r.values), r.unit)} - {fmt(max(r.values), r.unit)} | {r.unit} | {ratio} | "
            f"{verdict(r.target, ratio_value, r.median)} |"
        )
    return "\n".join(lines)


def verdict(target: str, ratio: float | None, median: float | None = None) -> str:
    """``>= 0.50x: met`` / ``<= 1.25x: not met`` for a row with a target: a ratio to the reference (``x``),
    or the median itself in the row's unit (``<= 0.2 s``, ``<= 500 MB``)."""
    if not target:
        return ""
    op, bound = target.split()[:2]
    value = ratio if bound.endswith("x") else median
    if value is None:
        return ""
    met = value >= float(bound.rstrip("x")) if op == ">=" else value <= float(bound.rstrip("x"))
    return f"{target}: {'met' if met else 'not met'}"


def header(args: argparse.Namespace) -> str:
    import lightning

    return (
        f"gdlab benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"lightning {lightning.__version__}, repeats {args.repeats}{' (quick)' if args.quick else ''}.\n"
        f"Command: `python scripts/benchmark.py {' '.join(sys.argv[1:])}`".rstrip()
    )


SECTIONS = ["training", "callbacks", "batching", "optimizer", "startup", "mnist", "vectorized", "loggers"]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks that it runs")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per variant (default 5, quick 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every variant")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument(
        "--out", default=str(REPO_ROOT / "outputs" / "benchmarks"), help="where the table goes"
    )
    parser.add_argument(
        "--override", action="append", default=[], help="extra config override for gdlab's training runs"
    )
    parser.add_argument("--profile", choices=["linear", "mlp", "cnn"], help="cProfile gdlab's fit and stop")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(chosen) - set(SECTIONS):
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    args.repeats = args.repeats or (1 if args.quick else 5)
    torch.set_num_threads(args.threads)

    if args.profile:
        report = profile_training(args.profile, args.override)
        print(report)
        return report

    import logging
    import warnings

    # Lightning's per-fit banners and the CPU-only hints would bury the table.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    rows: list[Row] = []
    extra_lines = []
    if "training" in chosen:
        rows += bench_training(args.repeats, args.quick, args.override)
    if "callbacks" in chosen:
        rows += bench_callbacks(args.repeats, args.quick, args.override)
    if "batching" in chosen:
        rows += bench_batching(args.repeats, args.quick)
    if "optimizer" in chosen:
        rows += bench_optimizer(args.repeats, args.quick)
    if "startup" in chosen:
        rows += bench_startup(args.repeats, args.quick)
        total, costs = import_costs()
        extra_lines = [
            "",
            f"`import gdlab.train` takes {total:.2f} s of imports (`python -X importtime`); "
            "self time per top-level package:",
            "",
        ]
        extra_lines += [f"- `{name}`: {sec:.2f} s" for name, sec in costs]
    if "mnist" in chosen:
        rows += bench_mnist(args.repeats, args.quick)
    if "vectorized" in chosen:
        rows += bench_members(args.repeats, args.quick)
        rows += bench_vectorized_sweeps(args.repeats, args.quick)
    if "loggers" in chosen:
        rows += bench_loggers(args.repeats, args.quick)

    report = "\n".join([header(args), "", table(rows), *extra_lines]) + "\n"
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"benchmark-{datetime.now():%Y-%m-%d_%H-%M-%S}{'-quick' if args.quick else ''}.md"
    path.write_text(report)
    (out / "latest.md").write_text(report)
    print(f"written to {path}")
    return report


if __name__ == "__main__":
    main()
