"""Stage ``correlations``: Pearson corr(p_ood, ‖r‖) per window with bootstrap CIs (SPEC §5.7, W13).

Only when eval_metrics.csv has ≥ 3 p_ood values at the analysed steps. Windows as the ``fits``
stage. Summary block ``correlations``. Flags: ``p_ood_at_chance`` (and ``p_ood_at_chance: true``
in the block) when the best analysed p_ood is at chance level (``AnalysisContext.chance_p_ood``):
the probe was never learned, so the correlations are correlations with noise;
``few_correlation_points`` when the whole-run correlation has fewer than `MIN_CORR_POINTS` points.
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.powerlaw import windowed_correlations
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import Flag, StageResult
from backbone_lab.analysis.stages.fits import fit_windows

MIN_CORR_POINTS = 5


class CorrelationsStage:
    name = "correlations"
    requires = ("decomposition",)

    def run(self, ctx: AnalysisContext) -> StageResult:
        if not ctx.has_p_ood:
            return StageResult()
        cfg, dec = ctx.cfg, ctx.need("decomposition")
        st = np.asarray(ctx.steps)
        by_window = windowed_correlations(st, ctx.p_ood, dec.norm_r, fit_windows(cfg, st[-1]), n_boot=cfg.corr_bootstrap,
                                          seed=cfg.seed, block=cfg.corr_block, exclude_zero_r=cfg.corr_exclude_zero_r)
        block = {
            "quantity": "pearson(p_ood, ||r||) over analysed steps" + (" with ||r|| > 0" if cfg.corr_exclude_zero_r else " with t > 0 (anchor kept)"),
            "bootstrap": {"n_boot": cfg.corr_bootstrap, "block": cfg.corr_block, "seed": cfg.seed, "ci": 0.95},
            "by_window": by_window,
            **ctx.common,
        }
        chance = ctx.p_ood_at_chance()
        flags = [chance] if chance else []
        if chance:
            block["p_ood_at_chance"] = True
        n_full = by_window["full"]["n"]
        if n_full < MIN_CORR_POINTS:
            flags.append(Flag("few_correlation_points", f"corr(p_ood, ‖r‖) over the whole run has only {n_full} points "
                                                        "(evaluations at analysed steps); its CI spans almost [-1, 1]"))
        lines = ["## Correlation of p_ood with ‖r‖ (SPEC §5.7)\n"]
        if chance:
            lines.append(f"**Caveat:** {chance.message}.\n")
        lines.append("| window | corr(p_ood, ‖r‖) | 95 % CI | n |\n|---|---|---|---|")
        for name, c in by_window.items():
            r = c.get("r")
            lines.append(f"| {name} | {'—' if r is None else f'{r:+.3f}'} | "
                         f"[{fmt(c.get('ci_low'), 2)}, {fmt(c.get('ci_high'), 2)}] | {c['n']} |")
        lines.append("")
        return StageResult(summary=block, report="\n".join(lines), flags=flags)
