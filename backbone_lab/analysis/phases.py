"""Phase backbones v_E, v_L and their alignment with the rolling backbone (paper §4.3–4.4; PAPER_MAP §5.5).

v_E: rows θ(t) − θ(anchor) for anchor < t ≤ boundary; v_L: rows θ(t) − θ(boundary) for
boundary < t ≤ last; both row-normalised uncentered PC1 (trunk in the paper, boundary 4000).
Reported: PC1 % of each phase, |<v_E, v_L>| and the angle arccos(·) in degrees,
A_E(w) = |<v_roll(w), v_E>|, A_L(w) = |<v_roll(w), v_L>|.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backbone_lab.analysis.gram import DriftGram, coeff_rows
from backbone_lab.analysis.pca import pca_rows


@dataclass
class PhaseResult:
    boundary: int
    v_early: np.ndarray
    v_late: np.ndarray
    pc1_early: float
    pc1_late: float
    n_early: int
    n_late: int
    overlap: float
    angle_deg: float

    def summary(self) -> dict:
        return {
            "boundary_step": self.boundary,
            "pc1_early_pct": 100 * self.pc1_early,
            "pc1_late_pct": 100 * self.pc1_late,
            "n_rows_early": self.n_early,
            "n_rows_late": self.n_late,
            "abs_overlap_vE_vL": self.overlap,
            "angle_deg": self.angle_deg,
        }


def default_boundary(steps: Sequence[int], preferred: int = 4000) -> int:
    """``preferred`` if it is an analysed step with ≥ 2 steps on each side, else the step closest
    to the middle of the run (PAPER_MAP §5.5 uses 4000 for 10k-step runs)."""
    st = np.asarray(steps)
    if preferred in st:
        i = int(np.where(st == preferred)[0][0])
        if i >= 2 and len(st) - 1 - i >= 2:
            return int(preferred)
    mid = (st[0] + st[-1]) / 2.0
    cand = st[1:-1] if len(st) > 2 else st
    return int(cand[np.argmin(np.abs(cand - mid))])


def phase_backbones(
    gram: DriftGram,
    steps: Sequence[int],
    anchor_step: int,
    boundary: int,
    row_normalise: bool = True,
) -> PhaseResult:
    """v_E over (anchor, boundary] from θ(anchor), v_L over (boundary, last] from θ(boundary)."""
    st = np.asarray(steps, dtype=np.int64)
    if boundary not in st:
        raise ValueError(f"phase boundary {boundary} is not an analysed step")
    T = len(gram.steps)
    early = [s for s in st if anchor_step < s <= boundary]
    late = [s for s in st if s > boundary]
    if len(early) < 1 or len(late) < 1:
        raise ValueError(f"phase boundary {boundary} leaves an empty phase")
    pe = pca_rows(gram, coeff_rows(T, gram.indices(early), gram.index(anchor_step)), row_normalise=row_normalise, n_dirs=1)
    pl = pca_rows(gram, coeff_rows(T, gram.indices(late), gram.index(boundary)), row_normalise=row_normalise, n_dirs=1)
    ve, vl = pe.dirs[:, 0], pl.dirs[:, 0]
    ov = float(abs(ve @ gram.G @ vl))
    return PhaseResult(
        boundary=int(boundary), v_early=ve, v_late=vl, pc1_early=pe.pca.pc1, pc1_late=pl.pca.pc1,
        n_early=len(early), n_late=len(late), overlap=ov, angle_deg=float(np.degrees(np.arccos(min(1.0, ov)))),
    )
