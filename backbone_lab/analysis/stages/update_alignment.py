"""Stage ``update_alignment``: cos(u, v_b) of checkpoint updates with the global backbone (PAPER_MAP §5.8).

u = θ(s) − θ(s') for consecutive analysed checkpoints (labelled at the integer midpoint) and, as
in the β2 analysis (variant 2), for every fixed lag (``update_lag``, default the cadence;
labelled at the interval end). v_b = the sign-fixed backbone of ``decomposition``. The noise
floor is E|cos| of a random direction in D dims (``analysis.noise_floor``).

Against the rolling backbones (stage ``rolling``, when it ran): ``rolling_reference`` holds the
out-of-sample alignment (reference window ending at ≤ t − lag, so it holds nothing of u; the
number to compare with the recorded gradient alignment) and, labelled ``in_sample_legacy``, the
paper's construction (window ending at t, which contains u: a random walk already scores far
above the floor). CSV variants ``rolling_out_of_sample`` / ``rolling_in_sample_legacy``.

Summary block ``update_alignment``; rows of ``update_alignment.csv`` (subset = the analysis
subset); figure ``update_alignment.png`` (|cos| on a log axis with the noise floor, the sign in the
markers). Flag ``early_is_whole_run``: the run ends at or before ``early_max_step``, so the "early"
mean is the mean of the whole run, not of an early phase.
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.noise_floor import noise_floor_record
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import CsvTable, Flag, Number, StageResult
from backbone_lab.analysis.update_alignment import (
    alignment_summary, consecutive_pairs, lag_pairs, rolling_reference_alignment, update_alignment,
)

UA_CSV = "update_alignment.csv"
UA_HEADER = ["subset", "variant", "step", "step_from", "step_to", "cos", "abs_cos"]


def ua_rows(subset: str, variant: str, res: dict) -> list[list]:
    """``update_alignment.csv`` rows of one `update_alignment` result."""
    return [[subset, variant, int(res["step"][i]), int(res["step_from"][i]), int(res["step_to"][i]),
             float(res["cos"][i]), float(res["abs_cos"][i])] for i in range(len(res["step"]))]


def early_label(early_max: int, last_step: int) -> str:
    return f"early (≤ {early_max})" + (" = the whole run" if last_step <= early_max else "")


class UpdateAlignmentStage:
    name = "update_alignment"
    requires = ("decomposition",)
    numbers = (
        Number("update_abs_cos", ("fixed_lag.mean_abs_cos", "consecutive.mean_abs_cos"), "abs cos",
               "mean |cos(u, v_b)| of the fixed-lag updates, else of consecutive snapshots (global v_b; paper §6.3)",
               headline=True, aliases=("update_mean_abs_cos",)),
        Number("update_abs_cos_early", ("fixed_lag.mean_abs_cos_early", "consecutive.mean_abs_cos_early"), "abs cos",
               "the same over the updates ending by early_max_step (paper §4.8: 0.15–0.32)", aliases=("update_mean_abs_cos_early",)),
        Number("update_lag", ("fixed_lag.lag", "consecutive.lag"), "steps", "lag of the fixed-lag updates (absent: consecutive snapshots)"),
        Number("update_sign_flip_step", ("fixed_lag.sign_flip_step", "consecutive.sign_flip_step"), "step",
               "first step where the signed cos(u, v_b) changes sign for good (paper §4.8: ≈5,100)"),
        Number("noise_floor", "noise_floor.mean_abs_cos", "abs cos", "E|cos| of a random direction with v_b in D dimensions, √(2/(πD))",
               headline=True),
        Number("update_oos_abs_cos", "rolling_reference.out_of_sample.mean_abs_cos", "abs cos",
               "mean |cos(u, v_roll)| against the rolling backbone of a window that ends before the update (out of sample)",
               aliases=("update_oos_mean_abs_cos",)),
        Number("update_insample_abs_cos", "rolling_reference.in_sample_legacy.mean_abs_cos", "abs cos",
               "the same against the window ending at the update's step, which contains it (in sample: the paper's construction)",
               aliases=("update_insample_mean_abs_cos",)),
    )

    def run(self, ctx: AnalysisContext) -> StageResult:
        cfg, gram = ctx.cfg, ctx.gram
        vb = ctx.need("decomposition").coeffs
        lag = cfg.update_lag or (ctx.cadence if ctx.cadence > 0 else None)
        block: dict = {"noise_floor": noise_floor_record(gram.dim), **ctx.common, "backbone": f"global {cfg.normalisation} PC1, sign a(final)>0"}
        res_c = update_alignment(gram, vb, consecutive_pairs(ctx.steps), label="mid")
        block["consecutive"] = {**alignment_summary(res_c, cfg.early_max_step, gram.dim), "label": "integer midpoint"}
        rows = ua_rows(cfg.subset, "consecutive", res_c)
        if lag:
            pairs_l = lag_pairs(ctx.steps, lag)
            if pairs_l:
                res_l = update_alignment(gram, vb, pairs_l, label="end")
                block["fixed_lag"] = {**alignment_summary(res_l, cfg.early_max_step, gram.dim), "lag": lag, "label": "interval end"}
        roll = ctx.maybe("rolling")
        pairs_r = (lag_pairs(ctx.steps, lag) if lag else []) or consecutive_pairs(ctx.steps)
        if roll is not None:
            ref_block = {"window": roll.window, "lag": lag, "pairs": "fixed lag" if lag and lag_pairs(ctx.steps, lag) else "consecutive"}
            for key, oos, rule in (("out_of_sample", True, "latest rolling window ending at <= t - lag (holds nothing of u)"),
                                   ("in_sample_legacy", False, "rolling window ending at t (contains u itself; the paper's construction)")):
                res_r = rolling_reference_alignment(gram, roll, pairs_r, out_of_sample=oos)
                ref_block[key] = {**alignment_summary(res_r, cfg.early_max_step, gram.dim), "reference": rule}
                rows += ua_rows(cfg.subset, f"rolling_{key}", res_r)
            block["rolling_reference"] = ref_block
        last = ctx.steps[-1]
        flags = []
        if last <= cfg.early_max_step:
            flags.append(Flag("early_is_whole_run", f"the run ends at step {last} ≤ early_max_step={cfg.early_max_step}: "
                                                    "the 'early' update alignment is the whole run, not an early phase"))
            for key in ("consecutive", "fixed_lag"):
                if key in block:
                    block[key]["early_is_whole_run"] = True
        figures = [self.figure(ctx, res_c, block)] if cfg.figures else []
        c = block["consecutive"]
        early = early_label(cfg.early_max_step, last)
        report = ("## Update–backbone alignment (paper §4.8, §6.3)\n\n"
                  f"Consecutive checkpoints: mean |cos| {fmt(c['mean_abs_cos'])}, {early} {fmt(c.get('mean_abs_cos_early'))}, "
                  + ("no sign change" if c["sign_flip_step"] is None else f"sign change at step {c['sign_flip_step']}") + f"; random-direction floor √(2/πD) = {block['noise_floor']['mean_abs_cos']:.2e} "
                  f"(×{fmt(c.get('mean_over_noise_floor'), 0)}).\n\n")
        if "fixed_lag" in block:
            fl = block["fixed_lag"]
            report += f"Fixed lag {fl['lag']}: mean |cos| {fmt(fl['mean_abs_cos'])}, {early} {fmt(fl.get('mean_abs_cos_early'))}.\n\n"
        if "rolling_reference" in block:
            rr = block["rolling_reference"]
            o, i = rr["out_of_sample"], rr["in_sample_legacy"]
            report += (f"Against the rolling backbone (W = {rr['window']}, {rr['pairs']} updates, n = {o['n']}): out of sample "
                       f"(window ending at ≤ t − lag) mean |cos| {fmt(o['mean_abs_cos'])} (×{fmt(o.get('mean_over_noise_floor'), 0)} the floor); "
                       f"in sample (legacy, window ending at t, contains u) {fmt(i['mean_abs_cos'])}.\n\n")
        report += "![update alignment](update_alignment.png)\n" if figures else ""
        return StageResult(summary=block, report=report, figures=figures, tables=[CsvTable(UA_CSV, UA_HEADER, rows)],
                           flags=flags, data=res_c)

    @staticmethod
    def figure(ctx: AnalysisContext, res: dict, block: dict):
        plt = P.pyplot()
        nf = block["noise_floor"]["mean_abs_cos"]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        n = int(np.isfinite(res["abs_cos"]).sum())
        if n >= 2:
            step, cos, a = np.asarray(res["step"]), np.asarray(res["cos"]), P.positive(res["abs_cos"])
            ax.semilogy(step, a, "-", color="#4C72B0", lw=1, alpha=0.7)
            pos, neg = cos > 0, cos < 0  # the sign is shown by the markers instead of a second, mostly empty panel
            ax.semilogy(step[pos], a[pos], "o", ms=4, color="#4C72B0", label="|cos(u, v_b)|, update along +v_b")
            if neg.any():
                ax.semilogy(step[neg], a[neg], "o", ms=4, mfc="white", color="#DD8452", label="|cos(u, v_b)|, update against v_b")
            ax.axhline(nf, color="#C44E52", ls="--", lw=1, label=f"random-direction floor √(2/πD) = {nf:.1e}")
            top = max(1.0, float(np.nanmax(res["abs_cos"])))
            ax.set_ylim(min(nf, float(np.nanmin(a))) / 3, top * 1.2)
            P.readable_log_ticks(ax, "y")
            ax.legend(fontsize=8, loc="lower left")
        else:
            P.not_enough(ax, f"not enough snapshots: {n} update(s) between analysed checkpoints")
        ax.set_ylabel("|cos(u, v_b)| (log)")
        P.step_axis(ax, "optimizer step (update midpoint)")
        c = block["consecutive"]
        ax.set_title(f"mean |cos| {fmt(c['mean_abs_cos'])}, "
                     + ("no sign change" if c["sign_flip_step"] is None else f"sign change at step {c['sign_flip_step']}"), fontsize=9)
        P.title_and_caption(fig, "Alignment of checkpoint updates with the backbone", ctx.common,
                            "u = θ(s) − θ(s′), consecutive snapshots")
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.17, top=0.86)
        return P.save(plt, fig, ctx.out_dir / "update_alignment.png")
