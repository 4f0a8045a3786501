"""What every analysis stage can read: the run, the selection, the streamed Grams, earlier results.

`run_analysis` builds one `AnalysisContext` after the streamed pass and hands it to each stage in
turn; a stage reads it and returns a `StageResult` (it never mutates the context). Results of
earlier stages are reached with ``ctx.need(name)`` (their in-memory ``data``).

For extra-diagnostics hooks written before stages existed, the context also answers the old dict
keys (``ctx["steps"]``, ``ctx.get("out_dir")``: run_dir, out_dir, cfg, reader, grams, steps,
anchor_step, backbone_coeffs, metrics, summary).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.gram import DriftGram, coeff_rows
from backbone_lab.analysis.selection import StepSelection
from backbone_lab.analysis.stage import Flag, StageResult
from backbone_lab.metrics_csv import align
from backbone_lab.run_dir import RunDir
from backbone_lab.trajectory.store import TrajectoryReader

ProgressFn = Callable[[str, int, int], None]

# p_ood at chance level: best value <= max(CHANCE_FACTOR / n_codewords, CHANCE_FLOOR). Guessing one of
# n codewords scores 1/n; the *best* of many noisy evaluations of that (256 probes: SE ≈ 0.5/n for
# n = 64) reaches 2-3/n. 3/n = 0.047 for 64 codewords (the tiny SGD twin's "near chance" rule uses
# 0.05); the floor 0.02 is the paper's "p_ood < 0.02" for 512 codewords and 2,000 probes (SPEC §4.1).
CHANCE_FACTOR = 3.0
CHANCE_FLOOR = 0.02

_LEGACY_KEYS = ("run_dir", "out_dir", "cfg", "reader", "grams", "steps", "anchor_step", "backbone_coeffs", "metrics", "summary")


def read_codeword_count(run: RunDir) -> int | None:
    """Number of codewords from ``<run>/codewords.json`` (None when absent or unreadable)."""
    try:
        doc = json.loads(run.codewords.read_text())
        n = int(doc.get("count", len(doc.get("codewords", []))))
        return n if n > 0 else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


@dataclass
class AnalysisContext:
    """Inputs of the analysis stages (see the module docstring).

    Attributes:
        run_dir: the path given to `run_analysis` (run folder or trajectory folder).
        run: the run folder holding ``eval_metrics.csv``, ``codewords.json``, ``diagnostics/``.
        traj_dir: the trajectory folder.
        out_dir: where outputs go.
        cfg: the analysis parameters.
        reader: the trajectory reader.
        selection: analysed steps (anchor first), cadence and the dropped steps.
        grams: group name -> drift Gram (the analysis subset under ``cfg.subset``, plus the groups
            stages asked for), all referenced to θ(anchor).
        metrics: eval_metrics.csv columns (``step`` int64, others float64) or None.
        n_codewords: number of codewords of the run (None: unknown).
        progress: optional callback(stage, done, total) for long passes.
        summary: summary.json so far (header + the blocks of earlier stages).
        results: stage name -> its result, for the stages run so far.
        current: name of the stage being run.
        anchor_inner: ⟨x_i, θ(anchor)⟩ and ‖θ(anchor)‖² of the analysis subset (unprojected),
            accumulated in the streamed pass (``analysis.shrinkage.AnchorInner``; None: not available).
    """

    run_dir: Path
    run: RunDir
    traj_dir: Path
    out_dir: Path
    cfg: AnalysisConfig
    reader: TrajectoryReader
    selection: StepSelection
    grams: dict[str, DriftGram]
    metrics: dict[str, np.ndarray] | None = None
    n_codewords: int | None = None
    progress: ProgressFn | None = None
    summary: dict = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    current: str = ""
    anchor_inner: Any = None

    # ------------------------------------------------------------------ selection
    @property
    def steps(self) -> list[int]:
        """Analysed steps, the anchor first."""
        return self.selection.steps

    @property
    def rows(self) -> list[int]:
        """Analysed steps after the anchor (the drift rows)."""
        return self.selection.rows

    @property
    def anchor(self) -> int:
        return self.selection.anchor

    @property
    def cadence(self) -> int:
        return self.selection.cadence

    @property
    def gram(self) -> DriftGram:
        """The Gram of the analysis subset."""
        return self.grams[self.cfg.subset]

    @property
    def T(self) -> int:
        return len(self.steps)

    @property
    def anchor_index(self) -> int:
        return self.gram.index(self.anchor)

    def drift_rows(self) -> np.ndarray:
        """(T−1, T) coefficients of the drift rows θ(s) − θ(anchor), s in `rows`."""
        return coeff_rows(self.T, self.gram.indices(self.rows), self.anchor_index)

    @property
    def common(self) -> dict:
        """The selection every summary block repeats: subset, anchor_step, cadence, n_steps, dim."""
        return {"subset": self.cfg.subset, "anchor_step": self.anchor, "cadence": self.cadence,
                "n_steps": self.T, "dim": self.gram.dim}

    # ------------------------------------------------------------------ eval metrics
    def eval_column(self, name: str) -> np.ndarray:
        """Eval column `name` at the analysed steps (NaN where not evaluated)."""
        return align(self.metrics, np.asarray(self.steps), name)

    @cached_property
    def p_ood(self) -> np.ndarray:
        """p_ood at the analysed steps (NaN where not evaluated)."""
        return self.eval_column("p_ood")

    @property
    def has_p_ood(self) -> bool:
        """At least 3 evaluated p_ood values after the anchor (correlations, switching)."""
        return bool(np.isfinite(self.p_ood[1:]).sum() >= 3)

    @property
    def chance_p_ood(self) -> tuple[float, str]:
        """(threshold, rule): p_ood at or below the threshold is chance level."""
        if self.cfg.chance_p_ood is not None:
            return float(self.cfg.chance_p_ood), f"chance_p_ood={self.cfg.chance_p_ood} (configured)"
        if self.n_codewords:
            t = max(CHANCE_FACTOR / self.n_codewords, CHANCE_FLOOR)
            return t, f"max({CHANCE_FACTOR:g}/{self.n_codewords} codewords, {CHANCE_FLOOR:g})"
        return CHANCE_FLOOR, f"{CHANCE_FLOOR:g} (no codewords.json)"

    def p_ood_at_chance(self) -> Flag | None:
        """A `p_ood_at_chance` flag when the best analysed p_ood is at chance level, else None."""
        p = self.p_ood[np.isfinite(self.p_ood)]
        if len(p) == 0:
            return None
        best = float(p.max())
        threshold, rule = self.chance_p_ood
        if best > threshold:
            return None
        return Flag("p_ood_at_chance", f"best p_ood {best:.4f} is at chance level (≤ {threshold:.4f} = {rule}): "
                                       "the probe was not learned, correlations and switching pairs with p_ood are noise")

    # ------------------------------------------------------------------ earlier stages
    def need(self, name: str) -> Any:
        """The in-memory result (``data``) of stage `name`, which must have run earlier."""
        res = self.results.get(name)
        if res is None:
            raise ValueError(f"analysis stage {self.current!r} needs stage {name!r} earlier in stages "
                             f"(configured: {self.cfg.stage_names()})")
        return res.data

    def maybe(self, name: str) -> Any:
        """The ``data`` of stage `name` if it ran (None otherwise)."""
        res = self.results.get(name)
        return None if res is None else res.data

    # ------------------------------------------------------------------ old hook interface
    def __getitem__(self, key: str) -> Any:
        if key not in _LEGACY_KEYS:
            raise KeyError(key)
        if key == "anchor_step":
            return self.anchor
        if key == "backbone_coeffs":
            dec = self.maybe("decomposition")
            return None if dec is None else dec.coeffs
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value
