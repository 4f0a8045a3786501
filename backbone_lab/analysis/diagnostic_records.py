"""Per-run CSV records of the diagnostics: `<run_dir>/diagnostics/<name>.csv`.

Rows are appended and flushed (and fsync'ed) one at a time, so a crash loses nothing. A resumed
run may compute a step again; readers keep the last row of every step (`read_records`). The
column set is fixed by the file's header: a resumed run with a different configuration writes
its known columns and leaves the others empty (extra keys are dropped with a warning).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import numpy as np

from backbone_lab.durable import open_append

FILES = {
    "grad_alignment": "grad_alignment.csv",
    "update_alignment": "update_alignment.csv",
    "fisher_per_sample": "fisher_per_sample.csv",
    "fisher_minibatch": "fisher_minibatch.csv",
}


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(float(value)) else repr(float(value))
    if isinstance(value, torch_tensor_types()):
        return _fmt(value.item())
    return str(value)


def torch_tensor_types() -> tuple:
    try:
        import torch

        return (torch.Tensor,)
    except ImportError:  # pragma: no cover
        return ()


class RecordWriter:
    """Append-only CSV with a header; one flushed row per `append`."""

    def __init__(self, path: str | Path, columns: list[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self._warned = False
        if not self.path.is_symlink() and self.path.exists() and self.path.stat().st_size > 0:  # a link is replaced
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self.columns = header

    def append(self, row: dict) -> None:
        extra = set(row) - set(self.columns)
        if extra and not self._warned:
            warnings.warn(f"{self.path}: columns {sorted(extra)} not in the existing header; dropped", stacklevel=2)
            self._warned = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open_append(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if f.tell() == 0:
                w.writerow(self.columns)
            w.writerow([_fmt(row.get(c)) for c in self.columns])
            f.flush()
            os.fsync(f.fileno())


def read_records(path: str | Path, key: str = "step") -> dict[str, np.ndarray]:
    """Columns of a diagnostics CSV as float arrays, de-duplicated on `key` (last row wins), sorted.

    Non-numeric cells (e.g. `ref_source`) come back as object arrays. An empty dict if the file
    does not exist or has no rows.
    """
    path = Path(path)
    if not path.exists():
        return {}
    by_key: dict[float, dict] = {}
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            if raw.get(key) in (None, ""):
                continue
            by_key[float(raw[key])] = raw
    if not by_key:
        return {}
    rows = [by_key[k] for k in sorted(by_key)]
    out: dict[str, np.ndarray] = {}
    for col in rows[0]:
        vals = [r.get(col) for r in rows]
        try:
            out[col] = np.array([float(v) if v not in ("", None) else np.nan for v in vals])
        except ValueError:
            out[col] = np.array(vals, dtype=object)
    return out
