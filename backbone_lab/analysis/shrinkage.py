"""The shrinkage direction θ(anchor): how much of the backbone is weight decay pulling θ toward 0.

With decoupled weight decay and no learning (the SGD controls of paper §5 at small learning rate),
θ(t) ≈ (1 − ηλ)^t θ(anchor), so every drift θ(t) − θ(anchor) is a negative multiple of θ(anchor)
and the "backbone" v_b is ±θ(anchor)/‖θ(anchor)‖: |cos(v_b, θ(anchor))| ≈ 1 says the backbone is
the shrinkage, not a learned direction.

Gram domain: with p_i = ⟨x_i, θ(anchor)⟩ (x_i = θ(s_i) − θ(anchor), the drift Gram's rows) and
q = ‖θ(anchor)‖², a direction v = Xᵀc has ⟨v, θ(anchor)⟩ = cᵀp, and projecting θ(anchor) out of
every drift changes the Gram to G − p pᵀ / q. p and q are accumulated in the analysis' streamed
Gram pass (``stream_grams(anchor_inner=True)``); `anchor_inner_products` is the same in a pass of
its own. float32 values are widened to float64 before differencing (exact), products accumulated
in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from backbone_lab.analysis.gram import DriftGram
from backbone_lab.trajectory.store import TrajectoryReader


@dataclass
class AnchorInner:
    """p (T,) = ⟨θ(s_i) − θ(anchor), θ(anchor)⟩ over the Gram's rows, q = ‖θ(anchor)‖² (parameter units²)."""

    p: np.ndarray
    q: float


def anchor_inner_products(reader: TrajectoryReader, steps: Sequence[int], anchor: int, columns: Sequence[slice],
                          chunk_bytes: int = 64 << 20) -> AnchorInner:
    """`AnchorInner` of the subset `columns` for the snapshots `steps` (the Gram's rows, in order)."""
    steps = [int(s) for s in steps]
    a = steps.index(int(anchor))
    p = np.zeros(len(steps))
    q = 0.0
    chunk_cols = max(1024, int(chunk_bytes) // (8 * len(steps)))
    for _, block in reader.iter_column_chunks(chunk_cols, steps=steps, columns=list(columns), verify=False):
        th = block[a].astype(np.float64)
        X = block.astype(np.float64) - th
        p += X @ th
        q += float(th @ th)
    return AnchorInner(p=p, q=q)


def project_out_anchor(gram: DriftGram, inner: AnchorInner) -> DriftGram:
    """The drift Gram with θ(anchor) projected out of every row: G − p pᵀ / q."""
    if inner.q <= 0:
        return gram
    G = gram.G - np.outer(inner.p, inner.p) / inner.q
    return replace(gram, G=0.5 * (G + G.T), meta={**gram.meta, "projected_out": "theta(anchor)"})


def shrinkage_cos(gram: DriftGram, coeffs: np.ndarray, inner: AnchorInner) -> float | None:
    """|cos(v, θ(anchor))| of the direction v = Xᵀcoeffs (None when v or θ(anchor) is zero)."""
    c = np.asarray(coeffs, dtype=np.float64)
    nv = gram.norm(c)
    if nv <= 0 or inner.q <= 0:
        return None
    return float(abs(c @ inner.p) / (nv * np.sqrt(inner.q)))
