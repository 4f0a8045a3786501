"""Stage ``correlations``: Pearson corr(p_ood, ‖r‖) per window with bootstrap CIs (PAPER_MAP §5.7, W13).

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
from backbone_lab.analysis.stage import Flag, StageResult
from backbone_lab.analysis.stages.fits import fit_windows

MIN_CORR_POINTS = 5
MIN_CI_POINTS = 8  # below this a Pearson r's bootstrap interval spans most of [-1, 1]: the table says "too few points"


def correlation_cells(c: dict, nd: int = 2) -> tuple[str, str]:
    """(estimate, 95 % interval) of one window for the report table, both rounded to `nd` decimals
    so that the printed estimate never falls outside its printed interval by rounding; "too few
    points" instead of an interval when n < `MIN_CI_POINTS`."""
    r = c.get("r")
    est = "—" if r is None else f"{r:+.{nd}f}"
    if c["n"] < MIN_CI_POINTS:
        return est, f"too few points (n < {MIN_CI_POINTS})"
    if r is None:
        return est, "—"
    lo, hi = c.get("ci_low"), c.get("ci_high")
    if lo is None or hi is None:
        return est, "—"
    return est, f"[{lo:+.{nd}f}, {hi:+.{nd}f}]"


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
        lines = ["## Correlation of p_ood with ‖r‖ (paper §4.6)\n"]
        if chance:
            lines.append(f"**Caveat:** {chance.message}.\n")
        lines.append("| window | corr(p_ood, ‖r‖) | 95 % CI | n |\n|---|---|---|---|")
        for name, c in by_window.items():
            est, interval = correlation_cells(c)
            lines.append(f"| {name} | {est} | {interval} | {c['n']} |")
        lines.append("")
        return StageResult(summary=block, report="\n".join(lines), flags=flags)
