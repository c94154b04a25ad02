"""metrics.json: the final record of a run (flat JSON: metric keys, ``status`` and a few facts).

``status`` is ``running`` while the run goes, then ``completed``, ``stopped_early`` (early stopping
ended it; ``reason`` says why), ``diverged``, ``failed`` or ``interrupted``. The first two are results:
their metrics reach sweepers and summaries. Nothing here imports torch: the sweep summary reads records
without it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
# The statuses of a run that trained to its end, so its final metrics are a result.
RESULT_STATUSES = ("completed", "stopped_early")


def to_number(value: Any) -> Any:
    """A tensor or number as a JSON-safe value (non-finite floats as the strings "nan", "inf", "-inf")."""
    if hasattr(value, "detach"):  # a tensor
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no literal for them
    return value


def is_rank_zero() -> bool:
    """Under DDP only rank 0 writes the run's files (Lightning's rank, set once the processes exist)."""
    import sys

    if "lightning" not in sys.modules:  # nothing distributed can be running yet
        return True
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def write_metrics(
    output_dir: str | os.PathLike, metrics: Mapping[str, Any], status: str, **info: Any
) -> Path:
    """Write ``metrics.json`` atomically (a temp file, then a rename), keys sorted; rank 0 only."""
    record = {k: to_number(v) for k, v in metrics.items()}
    record.update({k: to_number(v) for k, v in info.items()})
    record["status"] = status
    path = Path(output_dir) / METRICS_FILE
    if not is_rank_zero():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(record.items())), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_metrics(output_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(output_dir) / METRICS_FILE).read_text())


STOPPED_NOTE = (
    "stopped by Ctrl+C before it could record its step; resume=<run dir> continues from its last.ckpt"
)


def record_stopped(output_dir: str | os.PathLike, note: str) -> bool:
    """Ctrl+C ended a run whose processes were gone before they could say so (a launcher's worker, or a
    DDP rank stuck waiting for one that had stopped): its metrics.json still says ``running``, so record it
    as ``interrupted`` with ``note``. True when it did."""
    if not (Path(output_dir) / METRICS_FILE).is_file():
        return False
    record = read_metrics(output_dir)
    if record.pop("status", None) != "running":
        return False
    write_metrics(output_dir, record, status="interrupted", note=note)
    return True


def earlier_attempts(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """How each earlier attempt of a run ended (their metrics.json records, oldest first), for a resumed
    run to keep under ``"attempts"``: resuming never erases that a run diverged or failed."""
    if not (Path(output_dir) / METRICS_FILE).is_file():
        return []
    record = read_metrics(output_dir)
    return [*record.pop("attempts", []), record]


def describe_status(record: dict[str, Any]) -> str:
    """``completed``, ``diverged at step 17: <error>``, ``failed: <error>``: a record's outcome in words."""
    status = str(record.get("status", "unknown"))
    if status == "running":
        return "killed while running (its record was never finished)"
    if "step" in record and status not in RESULT_STATUSES:
        status += f" at step {record['step']}"
    error = str(record.get("error") or record.get("reason") or "")
    if error.startswith(status):
        return error  # "diverged at step 17: ..." says it already
    return f"{status}: {error}" if error else status
