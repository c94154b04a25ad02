"""scripts/benchmark.py --quick runs every comparison end to end and writes its table (no timing asserted)."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, unmeasured

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_every_comparison(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick", "--out", str(tmp_path)],
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
    for comparison in [
        "train: linear (5 features) batch 64",
        "train: MLP 16-256-256-1 batch 1024",
        "train: CNN 1x28x28 batch 256",
        "per-step cost: linear (5 features) batch 64",
        "batching: one shuffled epoch, batch 64",
        "batching: one shuffled epoch, batch 1024",
        "optimizer step: 20 parameter tensors",
        "optimizer step: 200 parameter tensors",
        "start-up: wall time",
        "start-up: peak memory (RSS)",
        "mnist 6k, 1 epoch MLP 784-64-128-64-10 batch 64: wall time",
        "mnist 6k, 1 epoch MLP 784-64-128-64-10 batch 64: peak memory (RSS)",
        "mnist 6k, 1 epoch MLP 784-64-128-64-10 batch 64: MNISTDataModule.setup()",
        "model-steps/s: linear (5 features) batch 64, 16 members",
        "model-steps/s: MLP 16-64-64-1 batch 64, 4 members",
        "model-steps/s: CNN [4] 8x8 digits batch 64, 2 members",
        "sweep: experiment=nonconvex (24 jobs x 50 steps)",
        "sweep: experiment=lr_regimes (7 jobs x 50 steps)",
        "sweep: experiment=lecture, 8 learning rates",
        "loggers: a tiny run, wall time",
    ]:
        rows = [line for line in text.splitlines() if line.startswith(f"| {comparison} |")]
        assert len(rows) >= 2, comparison
        assert "1.00x (ref)" in rows[0], rows[0]
        # every other variant has a positive median and a ratio to the reference
        for row in rows[1:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert float(cells[2].replace(",", "")) > 0 and re.fullmatch(r"\d+\.\d\dx", cells[5]), row
            assert cells[6] in ("", f"{cells[6].split(':')[0]}: met", f"{cells[6].split(':')[0]}: not met"), (
                row
            )
    assert "<= 1.25x: " in text and ">= 0.50x: " in text  # the targets are printed with each row
    assert "<= 0.2 s: " in text and "<= 500 MB: " in text  # targets in the row's own unit
    assert "bitwise equal to torch.optim.SGD" in text
    assert "python -X importtime" in text and re.search(r"- `torch[\w.]*`: \d+\.\d\d s", text)


def test_unknown_section_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "benchmark.py"),
            "--only",
            "trainnig",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown section(s) ['trainnig']" in proc.stderr
