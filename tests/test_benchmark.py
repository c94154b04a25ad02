"""scripts/benchmark.py --quick runs every comparison end to end and writes its table (no timing asserted).
Two commands of several sections each (``--only``), so that they run side by side under pytest-xdist."""

import importlib.util
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, child_env

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


# The sections run in two commands (each a Python process that imports torch and gdlab), side by side under
# pytest-xdist, of about the same length.
GROUPS = [["vectorized", "training", "callbacks"], ["mnist", "startup", "loggers", "batching", "optimizer"]]


def _script(monkeypatch):
    """scripts/benchmark.py as a module (it puts src/ first on sys.path: restored after the test)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_sections_are_the_scripts_sections(monkeypatch, capsys):
    benchmark = _script(monkeypatch)
    grouped = [section for group in GROUPS for section in group]
    assert sorted(grouped) == sorted(SECTIONS) == sorted(benchmark.SECTIONS)  # a new section gets a test here
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--only", "trainnig"])
    assert stop.value.code == 2
    assert f"unknown section(s) ['trainnig']; choose from {benchmark.SECTIONS}" in capsys.readouterr().err


@pytest.mark.parametrize("group", GROUPS, ids=["+".join(g) for g in GROUPS])
def test_quick_benchmark_writes_each_comparison(tmp_path, group):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "benchmark.py"),
            "--quick",
            "--only",
            ",".join(group),
            "--out",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=child_env(),  # timed children: unmeasured by coverage.py
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
    for section in group:
        check_section(text, section)


def check_section(text: str, section: str) -> None:
    """Every comparison of the section has its rows: the reference first, then each variant with a positive
    median, a ratio to the reference and its target met or not."""
    for comparison in SECTIONS[section]:
        rows = [line for line in text.splitlines() if line.startswith(f"| {comparison} |")]
        assert len(rows) >= 2, (comparison, text)
        assert "1.00x (ref)" in rows[0], rows[0]
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
