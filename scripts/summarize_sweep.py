"""Rebuild a sweep's summary (summary.csv, summary.md, summary.png) from its directory.

    python scripts/summarize_sweep.py outputs/multirun/<time>
    python scripts/summarize_sweep.py outputs/multirun/<time> --metrics val/loss test/loss

Prints the Markdown table; exits 1 when some job of the sweep did not complete (as the sweep did).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdlab.runs.sweep import SUMMARY_FILES, markdown_table, write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory, e.g. outputs/multirun/<time>")
    parser.add_argument(
        "--metrics", nargs="+", help="metrics to tabulate (default: every train/val/test key)"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(
            f"error: {args.sweep_dir} is not a directory: pass a sweep dir under outputs/multirun/",
            file=sys.stderr,
        )
        return 2
    summary = write_summary(args.sweep_dir, args.metrics)
    if not summary.jobs:
        print(f"error: no sweep jobs (directories with metrics.json) in {args.sweep_dir}", file=sys.stderr)
        return 2
    print(markdown_table(summary))
    print(
        "wrote " + ", ".join(str(args.sweep_dir / f) for f in SUMMARY_FILES if (args.sweep_dir / f).exists())
    )
    return 1 if summary.failed_jobs else 0


if __name__ == "__main__":
    sys.exit(main())
