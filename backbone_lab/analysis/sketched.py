"""What the analysis says about a sketched trajectory (``meta.sketch``: `snapshots.sketch_dim`, or
``sketch_dim`` on a checkpoint series; `backbone_lab.series.sketch`).

The Gram of the sketches estimates the drift Gram, so every Gram-based number is computed as
usual; this module gives the ``sketch`` block of summary.json (k, seed, nnz, the JL bound for the
analysed T), the ``sketched`` flag, the report section, and the stages that need the dense vectors
(`DENSE_ONLY_STAGES`, skipped with "needs dense snapshots").
"""

from __future__ import annotations

from backbone_lab.analysis.stage import Flag
from backbone_lab.series.sketch import SketchSpec

DENSE_ONLY_STAGES = ("backbone_file", "switching", "diagnostics")
"""Stages that need the dense snapshot vectors (a D-vector file, switching directions, Fisher
along v_b and other offline diagnostics)."""


def sketch_record(meta: dict | None, T: int, skipped: list[str]) -> dict | None:
    """summary["sketch"] for a trajectory with ``meta.sketch`` (None otherwise), bound at T snapshots."""
    rec = (meta or {}).get("sketch")
    if not rec:
        return None
    spec = SketchSpec(int(rec["k"]), int(rec["seed"]), int(rec["nnz"]))
    return {**spec.record(T), "sketched": True, "needs_dense_snapshots": list(skipped)}


def sketch_flag(s: dict) -> Flag:
    return Flag("sketched", f"the Gram is estimated from sketched snapshots (k = {s['k']} per block, seed {s['seed']}, "
                            f"nnz {s['nnz']}): every entry within eps = {s['jl_epsilon']:.3f} x |x_i| |x_j| with prob >= "
                            f"{1 - s['delta']:.2f} (rms {s['rms_rel_error']:.4f}); "
                            f"{', '.join(s['needs_dense_snapshots']) or 'no stage'}: needs dense snapshots")


def sketch_section(s: dict) -> str:
    return ("## Sketched snapshots\n\n"
            f"The trunk of each snapshot was projected to k = {s['k']} numbers per block (sparse JL, {s['nnz']} non-zeros "
            f"per coordinate, seed {s['seed']}); PC1 %, k95, rho(t), a(t), |r|, drift and update alignment below come from "
            f"the sketched Gram. Bound: |G_hat_ij - G_ij| <= {s['jl_epsilon']:.3f} |x_i| |x_j| for all pairs with probability "
            f">= {1 - s['delta']:.2f} (JL, T = {s['T']}); rms relative error per entry <= {s['rms_rel_error']:.4f}. "
            "Per-block numbers come from each block's own sketch.\n\n"
            + "".join(f"- {name}: needs dense snapshots\n" for name in s["needs_dense_snapshots"]))
