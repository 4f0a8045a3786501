"""Stage ``training_diagnostics``: the paper's Figs. 2/3 and numbers from ``<run>/diagnostics/``.

The diagnostics callbacks record, during training, per-batch gradient and accumulated-update
cosines with the backbone and Fisher Rayleigh quotients (docs/DIAGNOSTICS.md). This stage draws
``fig2_alignment.png`` / ``fig3_fisher.png`` (``backbone_lab.diagnostics.figures``) and sums up
the alignment gap the paper quotes ("updates 20–30× more aligned than gradients", §9.2).

Summary block ``training_diagnostics`` (only when the run has a diagnostics folder): ``source``,
``figures`` (name -> PNG), ``grad_mean_abs_cos``, ``update_mean_abs_cos`` (means over recorded
steps), ``update_over_grad``, ``noise_floor`` (median recorded √(2/(πD))), ``n_grad``, ``n_update``.

The recorded update is measured against the rolling backbone of the snapshots up to its own step
(``ref_step == step``: the reference contains u; ``update_in_sample_fraction``), the gradient
against one ending before it, so ``update_over_grad`` (the paper's gap) mixes in-sample with
out-of-sample and is kept as the legacy number. ``update_over_grad_out_of_sample`` divides the
out-of-sample update alignment (``update_oos_mean_abs_cos``: the recorded ``oos_abs_cos``, whose
reference is the snapshots ≤ t − Δ, as the gradient's is the snapshots ≤ t − 1; for runs recorded
before that column, the analysis' ``update_alignment.rolling_reference.out_of_sample``, see
``update_oos_source``) by the recorded gradient |cos|.
Imports the diagnostics package (and so torch) only when the folder exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import StageResult


def _mean(records: dict, key: str) -> tuple[float | None, int]:
    v = np.asarray(records.get(key, []), dtype=float)
    v = v[np.isfinite(v)]
    return (float(v.mean()) if len(v) else None), int(len(v))


def _in_sample_fraction(records: dict) -> float | None:
    """Fraction of recorded update rows whose reference ends at the update's own step (ref_step == step)."""
    st = np.asarray(records.get("step", []), dtype=float)
    ref = np.asarray(records.get("ref_step", []), dtype=float)
    if not len(st) or len(ref) != len(st):
        return None
    return float(np.mean(ref >= st))


class TrainingDiagnosticsStage:
    name = "training_diagnostics"

    def run(self, ctx: AnalysisContext) -> StageResult:
        source = ctx.run.diagnostics
        if not source.is_dir():
            return StageResult()
        from backbone_lab.diagnostics.figures import plot_alignment, plot_fisher
        from backbone_lab.diagnostics.records import FILES, read_records

        figures: dict[str, Path] = {}
        if ctx.cfg.figures:
            for name, plot in (("fig2_alignment", plot_alignment), ("fig3_fisher", plot_fisher)):
                p = plot(ctx.run.root, ctx.out_dir / f"{name}.png")
                if p is not None:
                    figures[name] = Path(p)
        g = read_records(source / FILES["grad_alignment"])
        u = read_records(source / FILES["update_alignment"])
        grad, n_grad = _mean(g, "abs_cos")
        upd, n_upd = _mean(u, "abs_cos")
        floors = np.concatenate([np.asarray(r.get("noise_floor", []), dtype=float) for r in (g, u)])
        floors = floors[np.isfinite(floors)]
        upd_oos, n_oos = _mean(u, "oos_abs_cos")  # recorded in training against the snapshots ≤ t − Δ
        oos_source = "recorded (reference: snapshots <= t - delta)"
        if upd_oos is None:
            ref = ((ctx.summary.get("update_alignment") or {}).get("rolling_reference") or {}).get("out_of_sample") or {}
            upd_oos, oos_source = ref.get("mean_abs_cos"), "analysis (update_alignment.rolling_reference.out_of_sample)"
            n_oos = ref.get("n", 0)
        block = {"source": str(source), "figures": {k: p.name for k, p in figures.items()},
                 "grad_mean_abs_cos": grad, "update_mean_abs_cos": upd,
                 "update_over_grad": upd / grad if upd is not None and grad else None,
                 "update_in_sample_fraction": _in_sample_fraction(u),
                 "update_oos_mean_abs_cos": upd_oos, "update_oos_source": oos_source if upd_oos is not None else None,
                 "n_update_oos": n_oos,
                 "update_over_grad_out_of_sample": upd_oos / grad if upd_oos is not None and grad else None,
                 "noise_floor": float(np.median(floors)) if len(floors) else None, "n_grad": n_grad, "n_update": n_upd}
        lines = ["## Diagnostics recorded in training: gradient vs update alignment, Fisher along the backbone (paper Figs. 2-3)\n",
                 "Per-batch gradient |cos| with the backbone vs the accumulated update's, beside the noise floor; "
                 "Rayleigh quotient q(v_b) of the empirical Fisher and the anisotropy q(v_b)/mean q(random). "
                 "CSV files: `diagnostics/`.\n",
                 f"Mean |cos(g, v_b)| {fmt(grad, 4)} over {n_grad} steps, mean |cos(Δθ, v_b)| {fmt(upd, 4)} over {n_upd} steps "
                 f"(ratio {fmt(block['update_over_grad'], 1)}, legacy: the update's reference contains it in "
                 f"{fmt(None if block['update_in_sample_fraction'] is None else 100 * block['update_in_sample_fraction'], 0)} % of rows), "
                 f"noise floor {fmt(block['noise_floor'], 6)}. Out of sample (analysis, rolling window ending before the update): "
                 f"update |cos| {fmt(upd_oos, 4)}, ratio {fmt(block['update_over_grad_out_of_sample'], 1)}.\n"]
        lines += [f"![{name}]({p.name})\n" for name, p in sorted(figures.items())]
        return StageResult(summary=block, report="\n".join(lines), figures=list(figures.values()))
