"""Processes that torchrun started share one run directory: rank 0 names it (its start time), and the other
ranks read that name from torchrun's own key-value store (``torch.distributed.TCPStore``, the store the
agent offers its workers), so a ``torchrun`` run writes one directory like any other run.

Only Hydra's resolvers call this, and only under torchrun does it import torch.
"""

from __future__ import annotations

import os
from datetime import timedelta

# torchrun sets these for its workers; with the agent's store, MASTER_ADDR:MASTER_PORT is that store.
AGENT_STORE = "TORCHELASTIC_USE_AGENT_STORE"
WAIT = timedelta(seconds=120)


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def shared_name(name: str) -> str:
    """``name`` on rank 0; rank 0's ``name`` on every other rank of the same torchrun job."""
    if not under_torchrun() or os.environ.get(AGENT_STORE, "").lower() != "true":
        return name
    from torch.distributed import TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=WAIT)
    key = f"gdlab/run_dir/{os.environ['TORCHELASTIC_RUN_ID']}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if rank() == 0:
        store.set(key, name)
    return store.get(key).decode()


def job_name(base: str) -> str:
    """The log file's name: ``train`` on rank 0, ``train_rank1`` ... on the others (they share the directory)."""
    return base if not under_torchrun() or rank() == 0 else f"{base}_rank{rank()}"
