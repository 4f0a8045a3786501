"""The per-evaluation metrics CSV (`<run_dir>/eval_metrics.csv`): the one writer and reader.

Columns (docs/ARCHITECTURE.md): `step, train_loss, train_lm_loss, val_loss, p_in, p_ood, nll_in,
nll_ood, lm_ood, r_ood, lambda, lr` (`train_loss` is the composite L_LM + λ L_probe of the training
micro-batches since the previous evaluation, `train_lm_loss` their L_LM, comparable with
`val_loss`). Each row is flushed and fsync'ed as soon as it is written, so nothing
is lost on a crash. A resumed run may evaluate a step again: every reader keeps the last row of
each step and returns the rows sorted by step. Empty or non-numeric cells read as NaN.

* `append_row(path, row)`   the training side (one row per evaluation);
* `read_rows(path)`         rows as dicts (`step` an int, the rest floats);
* `read_columns(path)`      columns as numpy arrays (`step` int64, the rest float64);
* `align(columns, steps, name)`  one column at given steps (NaN where not evaluated).

`read_columns(path, key=None)` also reads any other numeric CSV without de-duplication (the
analysis tables `timeseries.csv`, `rolling.csv`). No torch import.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EVAL_COLUMNS = ("step", "train_loss", "train_lm_loss", "val_loss", "p_in", "p_ood", "nll_in", "nll_ood",
                "lm_ood", "r_ood", "lambda", "lr")


def append_row(path: str | Path, row: dict, columns=EVAL_COLUMNS) -> None:
    """Append one row (missing keys -> empty cell); writes the header for a new file and keeps
    an existing file's columns (a run resumed by a newer version stays one consistent table)."""
    from backbone_lab.durable import open_append

    path = Path(path)
    new = path.is_symlink() or not path.exists() or path.stat().st_size == 0  # a planted link is replaced
    if not new:
        with open(path, newline="") as f:
            columns = next(csv.reader(f), None) or list(columns)
    with open_append(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        if f.tell() == 0:
            writer.writeheader()
        writer.writerow({k: _cell(row.get(k)) for k in columns})
        f.flush()
        os.fsync(f.fileno())


def _number(text) -> float:
    """A cell as float: '' / None / non-numeric -> NaN."""
    if text in ("", None):
        return math.nan
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _raw_rows(path: Path, key: str | None) -> tuple[list[str], list[dict]]:
    """(header, rows as raw dicts): de-duplicated on `key` (last wins) and sorted by it."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [c for c in (reader.fieldnames or []) if c is not None]
        rows = list(reader)
    if key is None or key not in header:
        return header, rows
    by_key: dict[float, dict] = {}
    for raw in rows:
        k = _number(raw.get(key))
        if math.isfinite(k):
            by_key[k] = raw
    return header, [by_key[k] for k in sorted(by_key)]


def read_rows(path: str | Path) -> list[dict]:
    """Rows as dicts of floats (`step` as int), de-duplicated on step (last wins), sorted by step."""
    header, rows = _raw_rows(Path(path), "step")
    out = []
    for raw in rows:
        row = {k: _number(raw.get(k)) for k in header}
        row["step"] = int(row["step"])
        out.append(row)
    return out


def read_columns(path: str | Path, key: str | None = "step") -> dict[str, np.ndarray] | None:
    """{column: array} of a numeric CSV, or None when the file is absent or has no rows.

    With `key` (default `step`, the eval-metrics convention) rows are de-duplicated on it (last
    wins) and sorted, and `step` comes back as int64; every other column is float64 (NaN for empty
    or non-numeric cells). `key=None` keeps the rows as written.
    """
    p = Path(path)
    if not p.exists():
        return None
    header, rows = _raw_rows(p, key)
    if not rows or (key is not None and key not in header):
        return None
    out = {c: np.array([_number(r.get(c)) for r in rows], dtype=np.float64) for c in header}
    if key == "step":
        out["step"] = out["step"].astype(np.int64)
    return out


def align(columns: dict[str, np.ndarray] | None, steps: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    """Values of column `name` at `steps` (NaN where not evaluated or the column is absent)."""
    out = np.full(len(steps), np.nan)
    if columns is None or name not in columns:
        return out
    pos = {int(s): i for i, s in enumerate(columns["step"])}
    for j, s in enumerate(steps):
        i = pos.get(int(s))
        if i is not None:
            out[j] = columns[name][i]
    return out


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value
