"""``summary.json``, the analysis' contract with everything downstream, as a typed object.

Every key is documented in docs/ANALYSIS.md. ``Summary`` is a thin, read-only wrapper around the
JSON dict: it is a ``Mapping`` (``s["pca"]["raw"]``), reads and writes the file (atomically), and
answers every number the stages declare (``analysis.stage.Number``) by its one name, so readers
(training's DONE marker, the comparison, the W&B summary, the claims) never spell key paths:

    s = Summary.read(RunDir(run).summary)
    s.pc1_rownorm_pct, s.k95_raw, s.drift, s.backbone_frac_mean, s.rho_mean   # declared numbers
    s.value("drift"), s.numbers(), s.declarations()                           # the same, by name
    s.snapshots_used, s.snapshots_dropped, s.flags
    s.headline()          # what the DONE marker records

The declarations come from summary.json's ``numbers`` table (written by the analysis, user stages
included), else from the built-in stages. Older names stay answered (``s.drift_final``,
``s.update_mean_abs_cos``: a declaration's ``aliases``). Accessors return None when a block is
absent (an analysis without that stage, an old file).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backbone_lab.analysis.stage import Number
from backbone_lab.durable import atomic_write_json
from backbone_lab.run_dir import RunDir

FORMAT = "backbone_lab.analysis.summary"
VERSION = 1
SUMMARY_NAME = RunDir(".").summary.name  # summary.json
REPORT_NAME = RunDir(".").report.name    # report.md


def json_safe(x: Any) -> Any:
    """JSON-safe values: NaN/inf -> None, numpy scalars/arrays -> Python, Paths -> str."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


_COUNT_UNITS = ("components", "step", "steps", "count")
_BUILTIN: dict[str, dict] | None = None


def _builtin_table() -> dict[str, dict]:
    """The built-in stages' ``numbers`` table (imported once, on first use)."""
    global _BUILTIN
    if _BUILTIN is None:
        from backbone_lab.analysis.registry import builtin_numbers

        _BUILTIN = builtin_numbers()
    return _BUILTIN


class Summary(Mapping[str, Any]):
    """A run's analysis summary (the parsed summary.json), with typed accessors."""

    def __init__(self, data: Mapping[str, Any] | None = None):
        self._data: dict[str, Any] = dict(data or {})
        self._decl: dict[str, Number] | None = None
        self._alias: dict[str, str] = {}

    # ------------------------------------------------------------------ file
    @classmethod
    def read(cls, path: str | os.PathLike) -> Summary:
        """Read summary.json (a file, an analysis folder or a run folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / SUMMARY_NAME if (p / SUMMARY_NAME).exists() else RunDir(p).summary
        return cls(json.loads(p.read_text()))

    @classmethod
    def read_or_empty(cls, path: str | os.PathLike) -> Summary:
        """Like `read`, but an empty Summary when the file is absent or not valid JSON."""
        try:
            return cls.read(path)
        except (OSError, json.JSONDecodeError):
            return cls()

    def write(self, path: str | os.PathLike) -> Path:
        """Write summary.json atomically (temp file + rename); NaN/inf become null."""
        return atomic_write_json(path, json_safe(self._data))

    def to_dict(self) -> dict[str, Any]:
        return self._data

    # ------------------------------------------------------------------ mapping
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Summary({self.run_dir!r}, {len(self._data)} keys)"

    def get_path(self, dotted: str, default: Any = None) -> Any:
        """A value by dotted path (``"pca.rownorm.pc1_pct"``); `default` where any part is absent."""
        node: Any = self._data
        for part in dotted.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                return default
        return node

    def _block(self, name: str) -> dict:
        b = self._data.get(name)
        return b if isinstance(b, dict) else {}

    # ------------------------------------------------------------------ selection
    @property
    def run_dir(self) -> str | None:
        return self._data.get("run_dir")

    @property
    def out_dir(self) -> str | None:
        return self._data.get("out_dir")

    @property
    def config(self) -> dict:
        return self._block("config")

    @property
    def subset(self) -> str | None:
        return self._data.get("subset")

    @property
    def anchor_step(self) -> int | None:
        return self._data.get("anchor_step")

    @property
    def cadence(self) -> int | None:
        return self._data.get("cadence")

    @property
    def steps(self) -> list[int]:
        return list(self._data.get("steps") or [])

    @property
    def dim(self) -> int | None:
        return self._data.get("dim")

    @property
    def snapshots_used(self) -> int | None:
        """Snapshots analysed (the anchor included)."""
        n = self.get_path("selection.n_used")
        return n if n is not None else self._data.get("n_steps")

    @property
    def snapshots_dropped(self) -> int | None:
        """Stored snapshots left out (before the anchor, off the cadence, excluded, after max_step)."""
        return self.get_path("selection.n_dropped")

    @property
    def dropped_steps(self) -> dict[str, list[int]]:
        """reason -> steps left out."""
        return {d["reason"]: list(d["steps"]) for d in self.get_path("selection.dropped", []) or []}

    @property
    def flags(self) -> list[dict]:
        """Degenerate cases: [{stage, code, message}]."""
        return list(self._data.get("flags") or [])

    @property
    def flag_codes(self) -> list[str]:
        return [f["code"] for f in self.flags]

    # ------------------------------------------------------------------ declared numbers
    def declarations(self) -> dict[str, Number]:
        """name -> `Number` (full paths) of every number this summary can answer: the ``numbers``
        table the analysis wrote (built-in and user stages), over the built-in stages' declarations
        (for files written before the table existed)."""
        if self._decl is None:
            table = dict(_builtin_table())
            table.update(self._data.get("numbers") or {})
            self._decl = {name: Number.from_entry(name, row)[1] for name, row in table.items()}
            self._alias = {a: name for name, num in self._decl.items() for a in num.aliases}
        return self._decl

    def declaration(self, name: str) -> Number | None:
        """The declaration of `name` (or of an older alias of it); None when nothing declares it."""
        decl = self.declarations()
        return decl.get(name) or decl.get(self._alias.get(name, ""))

    def value(self, name: str) -> Any:
        """A declared number by name (or alias): the first of its paths present; None when absent.
        Floats come back as float (JSON ints of a float number included), counts as int."""
        num = self.declaration(name)
        if num is None:
            raise KeyError(f"no number named {name!r} is declared (known: {', '.join(sorted(self.declarations()))})")
        for path in num.paths(""):
            v = self.get_path(path)
            if v is not None:
                return v if isinstance(v, int) and not isinstance(v, bool) and num.unit in _COUNT_UNITS else _number(v)
        return None

    def numbers(self, headline_only: bool = False) -> dict[str, Any]:
        """name -> value of every declared number (None when absent), in declaration order."""
        return {name: self.value(name) for name, num in self.declarations().items() if num.headline or not headline_only}

    def __getattr__(self, name: str) -> Any:
        # the declared numbers as attributes: s.pc1_rownorm_pct, s.drift (alias s.drift_final), ...
        if name.startswith("_"):
            raise AttributeError(name)
        if self.declaration(name) is None:
            raise AttributeError(f"{type(self).__name__!r} has no attribute or declared number {name!r}")
        return self.value(name)

    # ------------------------------------------------------------------ null baseline (not numbers)
    def null_band(self, metric: str) -> dict | None:
        """{observed, mean, lo, hi, beyond} of a statistic against the isotropic random walk (None: no null)."""
        m = self.get_path(f"null_baseline.metrics.{metric}")
        return dict(m) if isinstance(m, Mapping) else None

    @property
    def beyond_null(self) -> bool | None:
        """Whether the row-normalised PC1 % is above the random walk's 97.5 % quantile (None: no null)."""
        b = self._data.get("beyond_null")
        return b if isinstance(b, bool) else None

    def correlation_r(self, window: str) -> float | None:
        """corr(p_ood, ‖r‖) of a window label (``full``, ``0-2000``, ...); None when absent."""
        return _number(self.get_path(f"correlations.by_window.{window}.r"))

    @property
    def correlation_windows(self) -> list[str]:
        return list((self.get_path("correlations.by_window") or {}).keys())

    # ------------------------------------------------------------------ reheating (W16)
    @property
    def reheat_steps(self) -> list[int]:
        """Steps of a reheating run projected on its source run's backbone ([] without one)."""
        return list(self.get_path("reheating.steps") or [])

    @property
    def reheat_a(self) -> list[float | None]:
        """a(t) of the reheating run in the source backbone frame, aligned with `reheat_steps`."""
        return list(self.get_path("reheating.a") or [])

    # ------------------------------------------------------------------ DONE marker
    @property
    def report_path(self) -> str:
        return str(Path(self.out_dir or "") / REPORT_NAME)

    def headline(self) -> dict:
        """The headline numbers (declared ``headline=True``) plus the selection, the flags and the
        report path: training's DONE marker and console (the full summary stays in analysis/)."""
        out = {**self.numbers(headline_only=True),
               "snapshots_used": self.snapshots_used,
               "snapshots_dropped": self.snapshots_dropped,
               "analysis_flags": self.flag_codes or None,
               "report": self.report_path}
        return {k: v for k, v in out.items() if v is not None}
