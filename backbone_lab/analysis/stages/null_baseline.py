"""Stage ``null_baseline``: every headline number beside an isotropic random walk's (``analysis.null_baseline``).

For the analysed snapshots (same steps, cadence, anchor and subset dimension D) the stage draws
``null_draws`` random walks whose increments between consecutive snapshots have the run's own
norms (the schedule is matched) and random directions, plus as many shuffles of the run's own
increments, all in the Gram domain, and computes the same statistics as the analysis on each.

Summary block ``null_baseline``::

    {"method": ..., "draws": N, "seed": s,
     "metrics":  {name: {"observed", "mean", "lo", "hi", "beyond"}},   # random-walk band, 2.5/97.5 %
     "shuffled": {name: {"mean", "lo", "hi"}}, "shuffled_method": ...,
     "beyond_null": bool}

and the top-level key ``beyond_null``: the row-normalised PC1 % (the backbone's dominance, paper
§4.1) is above the random walk's 97.5 % quantile. Flag ``within_null`` when it is not.
"""

from __future__ import annotations

import time

from backbone_lab.analysis import null_baseline as nb
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import Flag, StageResult

DOMINANCE = "pc1_rownorm_pct"

LABELS = {  # report labels and units
    "pc1_rownorm_pct": "PC1 row-normalised (%)", "pc1_raw_pct": "PC1 raw (%)", "k95_rownorm": "k95 row-normalised",
    "k95_raw": "k95 raw", "backbone_frac_mean": "f_b mean", "backbone_frac_final": "f_b final",
    "drift": "‖Δθ(final)‖", "rho_mean": "ρ mean", "rho_min": "ρ min", "phase_pc1_gain": "late − early PC1 (points)",
    "phase_overlap": "\\|⟨v_E, v_L⟩\\|", "gamma_a_first": "γ_a (first window)", "update_abs_cos": "update \\|cos(u, v_b)\\|",
    "update_abs_cos_early": "early update \\|cos(u, v_b)\\|",
    "update_oos_abs_cos": "update \\|cos\\| vs rolling v_b, out of sample",
    "update_insample_abs_cos": "update \\|cos\\| vs rolling v_b, in sample (legacy)",
}


def _num(x, nd: int = 3) -> str:
    return fmt(None if x is None else float(x), nd)


class NullBaselineStage:
    name = "null_baseline"

    def run(self, ctx: AnalysisContext) -> StageResult:
        cfg = ctx.cfg
        title = "## Null baselines: isotropic random walk and shuffled increments\n"
        if cfg.null_draws == 0:
            return StageResult(summary={"skipped": "null_draws=0"}, report=title + "Skipped (null_draws=0).\n")
        if len(ctx.rows) < 2:
            why = f"needs >= 2 analysed steps after the anchor, have {len(ctx.rows)}"
            return StageResult(summary={"skipped": why}, report=title + f"Skipped: {why}.\n")
        seed = cfg.seed if cfg.null_seed is None else cfg.null_seed
        observed = nb.trajectory_statistics(ctx.gram, ctx.steps, cfg, ctx.cadence)
        t0 = time.perf_counter()
        walk = nb.null_draws(ctx.gram, ctx.steps, cfg, ctx.cadence, cfg.null_draws, seed, "random_walk", cfg.null_max_seconds)
        shuf = nb.null_draws(ctx.gram, ctx.steps, cfg, ctx.cadence, cfg.null_draws, seed + 1, "shuffled", cfg.null_max_seconds)
        seconds = time.perf_counter() - t0
        n_walk, n_shuf = len(walk[nb.METRICS[0]]), len(shuf[nb.METRICS[0]])
        metrics = nb.compare_with_null(observed, walk)
        shuffled = {k: nb.band(shuf[k]) for k in nb.METRICS}
        dom = metrics[DOMINANCE]
        beyond = bool(dom["observed"] is not None and dom["hi"] is not None and dom["observed"] > dom["hi"])
        block = {"method": nb.METHOD, "draws": n_walk, "draws_requested": cfg.null_draws, "draws_shuffled": n_shuf,
                 "seed": seed, "seconds": seconds, "band": "2.5-97.5 percentiles",
                 "metrics": metrics, "shuffled": shuffled, "shuffled_method": nb.SHUFFLED_METHOD,
                 "beyond_null": beyond, "beyond_null_rule": f"{DOMINANCE} > the random walk's 97.5 % quantile", **ctx.common}
        flags = [] if beyond else [Flag("within_null", f"the backbone's dominance (row-normalised PC1 {_num(dom['observed'], 1)} %) is not above an "
                                                        f"isotropic random walk with the same increment norms (95 % band {_num(dom['lo'], 1)}–{_num(dom['hi'], 1)} %): "
                                                        "a process with no backbone gives the same number")]
        limited = (f" (time limit null_max_seconds={cfg.null_max_seconds:g} s reached: {n_walk} / {n_shuf} of {cfg.null_draws} draws)"
                   if min(n_walk, n_shuf) < cfg.null_draws else "")
        lines = [title, f"{n_walk} draws{limited} (seed {seed}) of a random walk with this run's increment norms between the analysed "
                 "snapshots (same steps, anchor, D), simulated in the Gram domain, and of this run's increments in random order; "
                 "the same statistics as above on each. Band = 2.5–97.5 percentiles; **beyond** = ours outside the random walk's band.\n",
                 f"Backbone dominance beyond the null: **{'yes' if beyond else 'no'}** (row-normalised PC1 {_num(dom['observed'], 2)} % vs "
                 f"random walk {_num(dom['mean'], 2)} % [{_num(dom['lo'], 2)}, {_num(dom['hi'], 2)}]).\n",
                 "| statistic | ours | random walk mean [95 % band] | beyond | shuffled mean [95 % band] |",
                 "|---|---|---|---|---|"]
        for k in nb.METRICS:
            m, s = metrics[k], shuffled[k]
            if m["observed"] is None and m["mean"] is None:
                continue
            lines.append(f"| {LABELS.get(k, k)} | {_num(m['observed'])} | {_num(m['mean'])} [{_num(m['lo'])}, {_num(m['hi'])}] | "
                         f"{'—' if m['beyond'] is None else ('yes' if m['beyond'] else 'no')} | "
                         f"{_num(s['mean'])} [{_num(s['lo'])}, {_num(s['hi'])}] |")
        return StageResult(summary=block, report="\n".join(lines) + "\n", flags=flags, top_level={"beyond_null": beyond},
                           data={"observed": observed, "random_walk": walk, "shuffled": shuf})
