"""The analysis pipeline on planted trajectories: the legacy denominator fix, irregular step
selection, degenerate-case flags, user stages from outside the package, the typed Summary."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.run_analysis import run_analysis
from backbone_lab.analysis.selection import select_steps
from backbone_lab.analysis.summary import Summary
from backbone_lab.run_dir import RunDir
from backbone_lab.trajectory.store import TrajectoryError, TrajectoryWriter

FAST = dict(corr_bootstrap=0, figures=False, report=False, progress=False)


def write_matrix(run: Path, steps, theta: np.ndarray) -> Path:
    """A run folder whose trajectory stores the rows of `theta` (T, D) as two 'block' tensors."""
    D = theta.shape[1]
    h = D // 2
    w = TrajectoryWriter(RunDir(run).trajectory)
    for s, row in zip(steps, theta.astype(np.float32)):
        w.append(int(s), {"blocks.0.attn.qkv.weight": row[:h].reshape(-1, 4), "blocks.1.attn.qkv.weight": row[h:].reshape(-1, 4)})
    return run


def write_metrics(run: Path, steps, p_ood) -> None:
    with open(RunDir(run).eval_metrics, "w") as f:
        f.write("step,val_loss,p_ood\n")
        for s, p in zip(steps, p_ood):
            f.write(f"{s},2.0,{p}\n")


def planted(T: int, D: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(D)
    X = np.outer(np.linspace(0, 3, T) ** 1.5, v) + 0.3 * np.cumsum(rng.standard_normal((T, D)), axis=0)
    return X.astype(np.float32).astype(np.float64)


# ----------------------------------------------------------------------------- SPEC §5.1 / W2
def test_legacy_top10_changes_only_the_rownorm_fractions(tmp_path):
    """The reference normalises its truncated row-norm SVD by the top 10 σ² but uses the full SVD
    for raw fractions: top10_denominator=true must leave raw untouched (independent numpy SVD)."""
    steps = list(range(0, 2001, 100))  # anchor 0 + 20 drift rows > 10 components
    X = planted(len(steps))
    run = write_matrix(tmp_path / "run", steps, X)
    s = run_analysis(run, AnalysisConfig(top10_denominator=True, per_block=False, **FAST))
    D = X[1:] - X[0]
    sr = np.linalg.svd(D, compute_uv=False)
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    sn = np.linalg.svd(Dn, compute_uv=False)
    raw, rn = s["pca"]["raw"], s["pca"]["rownorm"]
    np.testing.assert_allclose(raw["explained"], (sr**2 / np.sum(sr**2))[:20], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rn["explained"], (sn**2 / np.sum(sn[:10] ** 2))[:20], rtol=1e-9, atol=1e-12)
    assert raw["top10_denominator"] is False and rn["top10_denominator"] is True
    assert rn["pc1_pct"] > 100 * sn[0] ** 2 / len(sn)  # inflated, as the reference's 71.43 %
    clean = run_analysis(run, AnalysisConfig(per_block=False, **FAST))
    assert clean["pca"]["raw"]["pc1_pct"] == raw["pc1_pct"]
