"""Stage ``update_alignment``: cos(u, v_b) of checkpoint updates with the global backbone (SPEC §5.8).

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
subset); figure ``update_alignment.png`` (|cos| on a log axis with the noise floor, signed cos
below). Flag ``early_is_whole_run``: the run ends at or before ``early_max_step``, so the "early"
mean is the mean of the whole run, not of an early phase.
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.noise_floor import noise_floor_record
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import CsvTable, Flag, StageResult
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
        report = ("## Update–backbone alignment (SPEC §5.8)\n\n"
                  f"Consecutive checkpoints: mean |cos| {fmt(c['mean_abs_cos'])}, {early} {fmt(c.get('mean_abs_cos_early'))}, "
                  f"sign change at {'none' if c['sign_flip_step'] is None else c['sign_flip_step']}; random-direction floor √(2/πD) = {block['noise_floor']['mean_abs_cos']:.2e} "
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
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        n = int(np.isfinite(res["abs_cos"]).sum())
        if n >= 2:
            ax.semilogy(res["step"], P.positive(res["abs_cos"]), "-o", ms=3, label="|cos(u, v_b)|")
            ax.axhline(nf, color="#C44E52", ls="--", lw=1, label=f"noise floor √(2/πD) = {nf:.1e}")
            top = max(1.0, float(np.nanmax(res["abs_cos"])))
            ax.set_ylim(min(nf, float(np.nanmin(P.positive(res["abs_cos"])))) / 3, top * 1.2)
            P.readable_log_ticks(ax, "y")
            ax.legend(fontsize=7, loc="best")
            ax2.plot(res["step"], res["cos"], "-o", ms=2.5, lw=1, color="#4C72B0")
            ax2.axhline(0, color="k", lw=0.6)
            ax2.set_ylim(-1.05, 1.05)
        else:
            P.not_enough(ax, f"not enough snapshots: {n} update(s) between analysed checkpoints")
            P.not_enough(ax2, "")
        ax.set_ylabel("|cos(u, v_b)| (log)")
        ax2.set_ylabel("signed cos(u, v_b)")
        P.step_axis(ax2, "optimizer step (update midpoint)")
        ax.set_title("update–backbone alignment (consecutive checkpoints)")
        fig.suptitle(P.run_title(ctx.common), fontsize=8)
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.1, top=0.9, hspace=0.12)
        return P.save(plt, fig, ctx.out_dir / "update_alignment.png")
