"""Per-step values of a finished run, read back from its CSV log (``<run dir>/csv/metrics.csv``)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

CSV_FILE = Path("csv") / "metrics.csv"


def read_series(run_dir: str | Path, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` in the run's CSV log, by step (empty when the run has none)."""
    path = Path(run_dir) / CSV_FILE
    if not path.is_file():
        return []
    values: dict[int, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            text = row.get(key) or ""
            if text and row.get("step"):
                value = float(text)
                if math.isfinite(value):
                    values[int(row["step"])] = value
    return sorted(values.items())
