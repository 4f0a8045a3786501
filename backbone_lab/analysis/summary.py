"""``summary.json``, the analysis' contract with everything downstream, as a typed object.

Every key is documented in docs/ANALYSIS.md. ``Summary`` is a thin, read-only wrapper around the
JSON dict: it is a ``Mapping`` (``s["pca"]["raw"]``), reads and writes the file (atomically), and
names the headline numbers once, so readers (training's DONE marker, the comparison report) never
spell key paths themselves:

    s = Summary.read(RunDir(run).summary)
    s.pc1_rownorm_pct, s.k95_raw, s.drift_final, s.backbone_frac_mean, s.rho_mean
    s.snapshots_used, s.snapshots_dropped, s.flags
    s.headline()          # what the DONE marker records

Accessors return None when a block is absent (an analysis without that stage, an old file).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

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


class Summary(Mapping[str, Any]):
    """A run's analysis summary (the parsed summary.json), with typed accessors."""

    def __init__(self, data: Mapping[str, Any] | None = None):
        self._data: dict[str, Any] = dict(data or {})

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

    # ------------------------------------------------------------------ headline numbers
    @property
    def pc1_rownorm_pct(self) -> float | None:
        """PC1 explained variance of the row-normalised drifts (%, paper §4.1)."""
        return _number(self.get_path("pca.rownorm.pc1_pct"))

    @property
    def pc1_raw_pct(self) -> float | None:
        """PC1 explained variance of the raw drifts (%)."""
        return _number(self.get_path("pca.raw.pc1_pct"))

    @property
    def pc2_rownorm_pct(self) -> float | None:
        return _number(self.get_path("pca.rownorm.pc2_pct"))

    @property
    def k95_rownorm(self) -> int | None:
        return self.get_path("pca.rownorm.k95")

    @property
    def k95_raw(self) -> int | None:
        return self.get_path("pca.raw.k95")

    @property
    def drift_final(self) -> float | None:
        """‖θ(final) − θ(anchor)‖ of the analysis subset (parameter units)."""
        return _number(self.get_path("decomposition.norm_delta_final"))

    @property
    def a_final(self) -> float | None:
        return _number(self.get_path("decomposition.a_final"))

    @property
    def backbone_frac_final(self) -> float | None:
        """f_b at the last analysed step (fraction, not %)."""
        return _number(self.get_path("decomposition.backbone_frac_final"))

    @property
    def backbone_frac_mean(self) -> float | None:
        """Mean f_b over the steps after the anchor (fraction; the paper's "68–72 %")."""
        return _number(self.get_path("decomposition.backbone_frac_mean"))

    @property
    def rho_min(self) -> float | None:
        """Smallest rolling-window |<v_b(t), v_b(t+1)>| (SPEC §5.4)."""
        return _number(self.get_path("rolling.rho_min"))

    @property
    def phase_overlap(self) -> float | None:
        """|<v_E, v_L>|: early vs late phase backbones (SPEC §5.5)."""
        return _number(self.get_path("phases.abs_overlap_vE_vL"))

    @property
    def update_abs_cos_recorded(self) -> float | None:
        """Mean |cos(update, v_b)| the in-training diagnostics recorded."""
        return _number(self.get_path("training_diagnostics.update_mean_abs_cos"))

    @property
    def noise_floor(self) -> float | None:
        """E|cos| of a random direction with the backbone in D dims (the alignment noise floor)."""
        return _number(self.get_path("update_alignment.noise_floor.mean_abs_cos"))

    @property
    def rho_mean(self) -> float | None:
        """Mean ρ between adjacent rolling windows (None when the rolling stage was skipped)."""
        return _number(self.get_path("rolling.rho_mean"))

    # ------------------------------------------------------------------ alignment
    def _update_block(self) -> dict:
        ua = self._block("update_alignment")
        return ua.get("fixed_lag") or ua.get("consecutive") or {}

    @property
    def update_mean_abs_cos(self) -> float | None:
        """Mean |cos(u, v_b)| of the fixed-lag updates (else consecutive checkpoints), SPEC §5.8."""
        return _number(self._update_block().get("mean_abs_cos"))

    @property
    def update_mean_abs_cos_early(self) -> float | None:
        """Same over the updates ending at ≤ early_max_step."""
        return _number(self._update_block().get("mean_abs_cos_early"))

    @property
    def update_lag(self) -> int | None:
        """Lag of the fixed-lag updates (None: consecutive checkpoints)."""
        return self._update_block().get("lag")

    @property
    def update_sign_flip_step(self) -> int | None:
        return self._update_block().get("sign_flip_step")

    @property
    def grad_mean_abs_cos(self) -> float | None:
        """Mean per-batch gradient |cos(g, v_b)| recorded during training (diagnostics callbacks)."""
        return _number(self.get_path("training_diagnostics.grad_mean_abs_cos"))

    @property
    def update_over_grad(self) -> float | None:
        """Recorded update |cos| / gradient |cos| (the paper's "20–30×" gap, §9.2)."""
        return _number(self.get_path("training_diagnostics.update_over_grad"))

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

    @property
    def reheat_max_abs_a_rel_change(self) -> float | None:
        return _number(self.get_path("reheating.max_abs_a_rel_change"))

    @property
    def reheat_source_pc1_pct(self) -> float | None:
        return _number(self.get_path("reheating.source_pc1_pct"))

    # ------------------------------------------------------------------ null baseline, controls
    def null_band(self, metric: str) -> dict | None:
        """{observed, mean, lo, hi, beyond} of a statistic against the isotropic random walk (None: no null)."""
        m = self.get_path(f"null_baseline.metrics.{metric}")
        return dict(m) if isinstance(m, Mapping) else None

    @property
    def beyond_null(self) -> bool | None:
        """Whether the row-normalised PC1 % is above the random walk's 97.5 % quantile (None: no null)."""
        b = self._data.get("beyond_null")
        return b if isinstance(b, bool) else None

    @property
    def update_oos_mean_abs_cos(self) -> float | None:
        """Mean update |cos| against the rolling backbone ending before the update (out of sample)."""
        return _number(self.get_path("update_alignment.rolling_reference.out_of_sample.mean_abs_cos"))

    @property
    def update_insample_mean_abs_cos(self) -> float | None:
        """Same against the window ending at the update's step (in sample, the paper's legacy construction)."""
        return _number(self.get_path("update_alignment.rolling_reference.in_sample_legacy.mean_abs_cos"))

    @property
    def update_over_grad_out_of_sample(self) -> float | None:
        """Out-of-sample update |cos| / recorded gradient |cos| (both references end before the step)."""
        return _number(self.get_path("training_diagnostics.update_over_grad_out_of_sample"))

    @property
    def shrinkage_cos(self) -> float | None:
        """|cos(v_b, θ(anchor))| (≈ 1: the backbone is weight decay shrinking θ(anchor))."""
        return _number(self._data.get("shrinkage_cos"))

    @property
    def val_loss_drop(self) -> float | None:
        """First minus last evaluated val loss (nats/token; None without evaluations)."""
        return _number((self._data.get("learning") or {}).get("drop"))

    # ------------------------------------------------------------------ DONE marker
    @property
    def report_path(self) -> str:
        return str(Path(self.out_dir or "") / REPORT_NAME)

    def headline(self) -> dict:
        """A few numbers for training's DONE marker and console (the full summary stays in analysis/)."""
        out = {
            "pc1_rownorm_pct": self.pc1_rownorm_pct,
            "pc1_raw_pct": self.pc1_raw_pct,
            "k95_raw": self.k95_raw,
            "drift_norm_final": self.drift_final,
            "backbone_frac_final": self.backbone_frac_final,
            "backbone_frac_mean": self.backbone_frac_mean,
            "rho_mean": self.rho_mean,
            "beyond_null": self.beyond_null,
            "snapshots_used": self.snapshots_used,
            "snapshots_dropped": self.snapshots_dropped,
            "analysis_flags": self.flag_codes or None,
            "report": self.report_path,
        }
        return {k: v for k, v in out.items() if v is not None}
