"""Stage ``switching``: switching directions between p_ood peaks and troughs (PAPER_MAP §5.12, W11).

Peaks / troughs of p_ood (prominence ``switch_prominence`` over ``switch_neighbourhood`` points),
switch pairs (peak, next trough) with tiers from ``eval_noise_sigma``; for each pair v_sw =
(θ_peak − θ_trough)/‖·‖, its backbone cosine and share, E_{2:k} with the raw principal directions
of the ``pca`` stage, pairwise cosines and the dimensionality against baselines; per-block
backbone cosines when the ``per_block`` stage ran. Only with p_ood (``switching=true``).

Summary block ``switching``. Flag ``p_ood_at_chance`` as the ``correlations`` stage: peaks of a
p_ood at chance level are evaluation noise.
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.decomposition import fix_sign
from backbone_lab.analysis.gram import DriftGram
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import StageResult
from backbone_lab.analysis.switching import detect_extrema, switch_pairs, switching_geometry


def unit_displacement(g: DriftGram, a: int, b: int) -> np.ndarray:
    """Coefficients of the unit vector (θ(a) − θ(b))/‖·‖ over the Gram's rows."""
    c = np.zeros(len(g.steps))
    c[g.index(a)] += 1
    c[g.index(b)] -= 1
    n = g.norm(c)
    return c / n if n > 0 else c


class SwitchingStage:
    name = "switching"
    requires = ("pca",)

    def run(self, ctx: AnalysisContext) -> StageResult:
        cfg = ctx.cfg
        if not (cfg.switching and ctx.has_p_ood):
            return StageResult()
        gram, T, ai = ctx.gram, ctx.T, ctx.anchor_index
        st = np.asarray(ctx.steps)
        p_ood = ctx.p_ood
        ok = np.isfinite(p_ood)
        ok[0] = ok[0] and ctx.anchor > 0
        idx = np.nonzero(ok)[0]
        pk, tr = detect_extrema(p_ood[idx], cfg.switch_prominence, cfg.switch_neighbourhood)
        sp = switch_pairs(st[idx], p_ood[idx], pk, tr, cfg.eval_noise_sigma)
        block: dict = {"peaks": [int(st[idx][i]) for i in pk], "troughs": [int(st[idx][i]) for i in tr],
                       "switch_pairs": sp, "prominence": cfg.switch_prominence, "neighbourhood": cfg.switch_neighbourhood,
                       "backbone": "global raw PC1, sign-fixed", **ctx.common}
        if sp:
            p_raw = ctx.need("pca").raw
            vb_raw, _ = fix_sign(gram, p_raw.v1, ai, T - 1)
            basis = p_raw.dirs.copy()
            basis[:, 0] = vb_raw
            block["geometry"] = switching_geometry(gram, [(d["peak"], d["trough"]) for d in sp], vb_raw, basis, cfg.switch_top_k, ctx.steps)
            for name, c in (ctx.maybe("per_block") or {}).items():
                gb = ctx.grams[name]
                block.setdefault("per_block_backbone_cos", {})[name] = [
                    float(np.asarray(unit_displacement(gb, d["peak"], d["trough"])) @ gb.G @ (c / gb.norm(c))) for d in sp]
        chance = ctx.p_ood_at_chance()
        if chance:
            block["p_ood_at_chance"] = True
        return StageResult(summary=block, report=self.section(block, chance), flags=[chance] if chance else [])

    @staticmethod
    def section(sw: dict, chance) -> str:
        lines = ["## Switching directions (paper §8)\n"]
        if chance:
            lines.append(f"**Caveat:** {chance.message}.\n")
        lines.append(f"Peaks {sw['peaks']}; troughs {sw['troughs']}; {len(sw['switch_pairs'])} switch pairs.\n")
        g = sw.get("geometry")
        if g:
            for p in g["pairs"][:10]:
                lines.append(f"- ({p['peak']}, {p['trough']}): ‖Δθ‖ {fmt(p['norm'], 2)}, ⟨v_sw, v_b⟩ {p['backbone_cos']:+.3f}, "
                             f"share {fmt(p['backbone_share'])}, E_2:k {fmt(p.get('E_2_k'))}")
            dm = g.get("dimensionality", {})
            if dm:
                bl = dm.get("same_regime_baseline", {})
                lines.append(f"\nDimensionality: participation ratio {fmt(dm['switch']['participation_ratio'], 2)} (k95 {dm['switch']['k95']}) vs "
                             f"same-regime baseline {fmt(bl.get('participation_ratio'), 2)} (k95 {bl.get('k95', '—')}) and random "
                             f"{fmt(dm['random_baseline_participation_ratio'], 2)}.\n")
        return "\n".join(lines) + "\n"
