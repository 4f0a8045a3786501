"""Reheating projection onto the source run's backbone (paper §7; PAPER_MAP §4.3, W16).

The paper claims a(t) "stays largely unchanged" during reheating but no reference script computes
it. Here the reheating run's snapshots θ_h(t) (its own trajectory dir, step counter restarting)
are projected onto the source run's v_b:

    a_h(t) = <θ_h(t) − θ_src(anchor), v_b>,  ‖r_h(t)‖ = √(‖θ_h(t) − θ_src(anchor)‖² − a_h(t)²).

v_b = Xᵀc is a combination of the source drifts, so one joint streamed pass over both stores
(rows [source; reheat], all relative to θ_src(anchor)) yields everything; no D-vector is formed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.gram import DriftGram, coeff_rows, stream_grams
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.selection import select_steps
from backbone_lab.trajectory.store import TrajectoryReader


def reheating_projection(
    source_run: str | os.PathLike,
    reheat_run: str | os.PathLike,
    cfg=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """a(t), ‖r(t)‖ of a reheating run in the source run's backbone frame.

    Args:
        source_run: run dir / trajectory folder of the source run (defines v_b).
        reheat_run: run dir / trajectory folder of the reheating run.
        cfg: AnalysisConfig (subset, normalisation, source_anchor_step, cadence, exclude_steps (of the
            reheating run), chunk_mb, device, verify_crc are used; default AnalysisConfig()).
    Returns a dict with the source backbone summary, reheating steps, a, norm_r, norm_delta,
    relative change of a vs the source's final a, and cos(θ_h(t) − θ_h(first), v_b).
    """
    cfg = cfg or AnalysisConfig()
    src = TrajectoryReader(source_run, verify=cfg.verify_crc, check_files=False)
    rh = TrajectoryReader(reheat_run, verify=cfg.verify_crc, check_files=False)
    sel = select_steps(src.steps, anchor_step=cfg.source_anchor_step, cadence=cfg.cadence)
    s_steps, anchor, cadence = sel.steps, sel.anchor, sel.cadence
    h_steps = [s for s in rh.steps if s not in set(cfg.exclude_steps)]
    cols = src.subset_columns(cfg.subset)
    cb = (lambda d, t: progress("reheat-gram", d, t)) if progress else None
    g = stream_grams([src, rh], {cfg.subset: cols}, steps=[s_steps, h_steps], ref=(0, anchor),
                     chunk_bytes=cfg.chunk_mb << 20, device=cfg.device, verify=cfg.verify_crc, progress=cb)[cfg.subset]
    Ts, Th = len(s_steps), len(h_steps)
    T = Ts + Th
    G = g.G
    # source-only Gram view for the PCA (rows after the anchor, relative to it)
    gs = DriftGram(steps=np.asarray(s_steps), G=G[:Ts, :Ts], ref_step=anchor, subset=cfg.subset, dim=g.dim)
    pr = pca_rows(gs, coeff_rows(Ts, np.arange(1, Ts), 0), row_normalise=(cfg.normalisation == "rownorm"), n_dirs=1)
    c = np.zeros(T)
    c[:Ts] = pr.v1
    p = G @ c
    if p[Ts - 1] - p[0] < 0:  # sign: a_src(final) > 0
        c, p = -c, -p
    a_src = p[:Ts] - p[0]
    hi = np.arange(Ts, T)
    a_h = p[hi] - p[0]
    k = G[hi, hi] - 2 * G[hi, 0] + G[0, 0]
    nd = np.sqrt(np.clip(k, 0, None))
    nr = np.sqrt(np.clip(k - a_h**2, 0, None))
    # displacement within the reheating run, relative to its first snapshot
    h0 = hi[0]
    dd = G[hi, hi] - 2 * G[hi, h0] + G[h0, h0]
    du = np.sqrt(np.clip(dd, 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_disp = np.where(du > 0, (p[hi] - p[h0]) / np.where(du > 0, du, 1), np.nan)
    a_final = float(a_src[-1])
    rel = (a_h - a_final) / a_final if a_final != 0 else np.full(Th, np.nan)
    return {
        "source_run": str(Path(source_run)),
        "source_anchor_step": int(anchor),
        "source_cadence": int(cadence),
        "source_steps": [int(s) for s in s_steps],
        "subset": cfg.subset,
        "normalisation": cfg.normalisation,
        "source_pc1_pct": 100 * pr.pca.pc1,
        "source_a_final": a_final,
        "sign_convention": "a_source(final) > 0",
        "steps": [int(s) for s in h_steps],
        "a": a_h.tolist(),
        "norm_r": nr.tolist(),
        "norm_delta": nd.tolist(),
        "a_rel_change": rel.tolist(),
        "max_abs_a_rel_change": float(np.nanmax(np.abs(rel))) if Th else None,
        "norm_displacement_in_reheat": du.tolist(),
        "cos_displacement_vb": cos_disp.tolist(),
        "crc_verified": g.meta["crc_verified"],
    }
