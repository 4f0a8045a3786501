"""Append-only CSV of per-evaluation metrics (`<run_dir>/eval_metrics.csv`).

Each row is flushed and fsync'ed as soon as it is written, so nothing is lost on a crash. A
resumed run may evaluate a step again: readers keep the last row of every step.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

EVAL_COLUMNS = ("step", "train_loss", "val_loss", "p_in", "p_ood", "nll_in", "nll_ood",
                "lm_ood", "r_ood", "lambda", "lr")


def append_row(path: str | Path, row: dict, columns=EVAL_COLUMNS) -> None:
    """Append one row (missing keys -> empty cell); writes the header for a new file."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: str | Path) -> list[dict]:
    """Rows as dicts of floats (step as int), de-duplicated on step (last wins), sorted by step."""
    by_step: dict[int, dict] = {}
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: (float(v) if v not in ("", None) else math.nan) for k, v in raw.items()}
            row["step"] = int(row["step"])
            by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value
