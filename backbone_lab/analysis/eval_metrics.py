"""Reading ``<run_dir>/eval_metrics.csv`` (columns in docs/ARCHITECTURE.md).

Rows are de-duplicated on ``step`` keeping the last one (a resumed run may re-evaluate a step).
Missing or non-numeric values (``""``, ``None``, ``nan``) become NaN.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np


def read_eval_metrics(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """{column: float64 array} sorted by step (``step`` as int64), or None if the file is absent/empty."""
    p = Path(path)
    if not p.exists():
        return None
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "step" not in rows[0]:
        return None
    by_step: dict[int, dict] = {}
    for r in rows:
        try:
            s = int(float(r["step"]))
        except (TypeError, ValueError):
            continue
        by_step[s] = r  # keep last
    steps = sorted(by_step)
    cols = [c for c in rows[0].keys() if c != "step" and c is not None]
    out: dict[str, np.ndarray] = {"step": np.array(steps, dtype=np.int64)}
    for c in cols:
        vals = []
        for s in steps:
            v = by_step[s].get(c)
            try:
                vals.append(float(v))
            except (TypeError, ValueError):
                vals.append(np.nan)
        out[c] = np.array(vals, dtype=np.float64)
    return out


def align(metrics: dict[str, np.ndarray] | None, steps: np.ndarray, column: str) -> np.ndarray:
    """Values of ``column`` at ``steps`` (NaN where not evaluated / column absent)."""
    out = np.full(len(steps), np.nan)
    if metrics is None or column not in metrics:
        return out
    pos = {int(s): i for i, s in enumerate(metrics["step"])}
    for j, s in enumerate(steps):
        i = pos.get(int(s))
        if i is not None:
            out[j] = metrics[column][i]
    return out
