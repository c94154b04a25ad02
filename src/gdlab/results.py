"""metrics.json: the final record of a run (flat JSON: metric keys, ``status`` and a few facts)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

METRICS_FILE = "metrics.json"


def to_number(value: Any) -> Any:
    """A tensor or number as a JSON-safe float (non-finite values as the strings JSON allows none of)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": JSON has no literal for them
    return value


def write_metrics(
    output_dir: str | os.PathLike, metrics: Mapping[str, Any], status: str, **info: Any
) -> Path:
    """Write ``metrics.json`` atomically (write to a temp file, then rename), sorted keys."""
    record = {k: to_number(v) for k, v in metrics.items()}
    record.update({k: to_number(v) for k, v in info.items()})
    record["status"] = status
    path = Path(output_dir) / METRICS_FILE
    if rank_zero_only.rank != 0:  # DDP: the job's one metrics.json is rank 0's
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(record.items())), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_metrics(output_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(output_dir) / METRICS_FILE).read_text())
