"""scripts/benchmark.py --quick runs every comparison end to end and writes its table (no timing asserted).
One test per section (``--only``), so that the sections run side by side under pytest-xdist."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, unmeasured

pytestmark = pytest.mark.slow

# Each section's comparisons (the start of the row's first cell; --quick sizes follow in some).
SECTIONS = {
    "training": [
        "train: linear (5 features) batch 64",
        "train: MLP 16-256-256-1 batch 1024",
        "train: CNN 1x28x28 batch 256",
    ],
    "callbacks": ["per-step cost: linear (5 features) batch 64"],
    "batching": ["batching: one shuffled epoch, batch 64", "batching: one shuffled epoch, batch 1024"],
    "optimizer": ["optimizer step: 20 parameter tensors", "optimizer step: 200 parameter tensors"],
    "startup": ["start-up: wall time", "start-up: peak memory (RSS)"],
    "mnist": [
        "mnist 2k, 1 epoch MLP 784-64-128-64-10 batch 64: wall time",
        "mnist 2k, 1 epoch MLP 784-64-128-64-10 batch 64: peak memory (RSS)",
        "mnist 2k, 1 epoch MLP 784-64-128-64-10 batch 64: MNISTDataModule.setup()",
    ],
    "vectorized": [
        "model-steps/s: linear (5 features) batch 64, 16 members",
        "model-steps/s: MLP 16-64-64-1 batch 64, 4 members",
        "model-steps/s: CNN [4] 8x8 digits batch 64, 2 members",
        "sweep: experiment=nonconvex (8 jobs x 20 steps)",
        "sweep: experiment=lr_regimes (7 jobs x 20 steps)",
        "sweep: experiment=lecture, 4 learning rates",
    ],
    "loggers": ["loggers: a tiny run, wall time"],
}


def test_the_sections_are_the_scripts_sections():
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--only", "trainnig"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown section(s) ['trainnig']" in proc.stderr
    assert f"choose from {list(SECTIONS)}" in proc.stderr  # a new section gets a test here


@pytest.mark.parametrize("section", SECTIONS)
def test_quick_benchmark_writes_each_comparison(tmp_path, section):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "benchmark.py"),
            "--quick",
            "--only",
            section,
            "--out",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=unmeasured(dict(os.environ)),  # timed children: measuring their lines would only slow them
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (table,) = [p for p in tmp_path.glob("benchmark-*-quick.md")]
    text = table.read_text()
    assert (tmp_path / "latest.md").read_text() == text
    assert "| comparison | variant | median | min - max | unit | ratio | target |" in text
    assert text.split("| --- |")[0].split("\n")[0] in proc.stdout  # the table is printed too
    for comparison in SECTIONS[section]:
        rows = [line for line in text.splitlines() if line.startswith(f"| {comparison} |")]
        assert len(rows) >= 2, (comparison, text)
        assert "1.00x (ref)" in rows[0], rows[0]
        # every other variant has a positive median and a ratio to the reference
        for row in rows[1:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert float(cells[2].replace(",", "")) > 0 and re.fullmatch(r"\d+\.\d\dx", cells[5]), row
            assert cells[6] in ("", f"{cells[6].split(':')[0]}: met", f"{cells[6].split(':')[0]}: not met"), (
                row
            )
    if section == "training":
        assert ">= 0.50x: " in text and ">= 0.90x: " in text  # the targets are printed with each row
    if section == "startup":
        assert "<= 1.25x: " in text and "<= 0.30x: " in text
        assert "python -X importtime" in text and re.search(r"- `torch[\w.]*`: \d+\.\d\d s", text)
    if section == "mnist":
        assert "<= 0.2 s: " in text and "<= 500 MB: " in text  # targets in the row's own unit
    if section == "optimizer":
        assert "bitwise equal to torch.optim.SGD" in text
