"""The CSV files of the analysis output folder, assembled from the stages' `CsvTable` rows.

Stages contribute rows (``StageResult.tables``); `merge_tables` combines contributions to the
same file (same header: rows appended in stage order; disjoint headers with equal row counts:
columns joined), `write_table` writes one file atomically. Non-finite floats become empty cells
(the eval-metrics convention: empty = not available).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from backbone_lab.analysis.stage import CsvTable
from backbone_lab.durable import atomic_write_text


def merge_tables(tables: Sequence[CsvTable]) -> list[CsvTable]:
    """One table per file name, in order of first appearance (see the module docstring)."""
    out: dict[str, CsvTable] = {}
    for t in tables:
        have = out.get(t.name)
        if have is None:
            out[t.name] = CsvTable(t.name, list(t.header), [list(r) for r in t.rows])
        elif have.header == list(t.header):
            have.rows += [list(r) for r in t.rows]
        elif not set(have.header) & set(t.header) and len(have.rows) == len(t.rows):
            have.header += list(t.header)
            have.rows = [a + list(b) for a, b in zip(have.rows, t.rows)]
        else:
            raise ValueError(f"{t.name}: a stage's columns {t.header} ({len(t.rows)} rows) fit neither the rows nor "
                             f"beside the columns {have.header} ({len(have.rows)} rows) of an earlier stage")
    return list(out.values())


def _cell(v):
    return "" if isinstance(v, float) and not math.isfinite(v) else v


def write_table(out_dir: str | Path, table: CsvTable) -> Path:
    """Write ``<out_dir>/<table.name>`` (header + rows)."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(table.header)
    for r in table.rows:
        w.writerow([_cell(v) for v in r])
    return atomic_write_text(Path(out_dir) / table.name, buf.getvalue())
