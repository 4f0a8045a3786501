"""The headline figure of a comparison (`headline.png`): does each run have a backbone?

Six panels, one colour per seed group (as in the overlays): PC1 of the drift (row-normalised and raw, %);
k95 (components for 95 % of the drift energy); the explained-variance spectra overlaid (log);
the drift ‖θ(final) − θ(anchor)‖ (log when runs differ by orders of magnitude, e.g. β2 = 0); the
alignment gap — per-batch gradient |cos| recorded in training vs the accumulated update's, with
the noise floor (log); and the best p_ood with the chance level.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.compare.claim_selection import chance_threshold
from backbone_lab.compare.plots import group_colors
from backbone_lab.compare.runs import Run, eval_best


def _val(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else np.nan


def _run_axis(ax, labels: list[str]) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([textwrap.fill(lab, 30, break_long_words=False) for lab in labels], rotation=25, ha="right",
                       fontsize=7)
    ax.grid(axis="x", visible=False)


def _bars(ax, values: list[float], colors: list[str], labels: list[str], what: str, label: str | None = None) -> bool:
    v = np.array(values, dtype=float)
    if not np.isfinite(v).any():
        P.not_enough(ax, f"no run has {what}")
        return False
    ax.bar(range(len(v)), np.nan_to_num(v, nan=0.0), color=colors, label=label)
    for i, x in enumerate(v):
        if not np.isfinite(x):
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
    _run_axis(ax, labels)
    return True


def headline_figure(runs: list[Run], out_dir: Path) -> str | None:
    """Write `headline.png`; returns its name (None without an analysed run)."""
    runs = [r for r in runs if r.ok and r.summary]
    if not runs:
        return None
    plt = P.pyplot()
    colors_by = group_colors(runs)
    colors = [colors_by[id(r)] for r in runs]
    labels = [r.label or r.name for r in runs]
    s = [r.summary for r in runs]
    fig, axes = plt.subplots(2, 3, figsize=(15.5, 8.4))
    (a_pc1, a_k95, a_spec), (a_drift, a_align, a_pood) = axes

    # PC1 row-norm (bars) and raw (markers)
    if _bars(a_pc1, [_val(x.pc1_rownorm_pct) for x in s], colors, labels, "a PCA", "row-normalised drifts (bars)"):
        a_pc1.plot(range(len(s)), [_val(x.pc1_raw_pct) for x in s], "k_", ms=18, mew=2, ls="none", label="raw drifts (—)")
        a_pc1.set_ylim(0, 122)
        a_pc1.set_yticks(range(0, 101, 20))
        a_pc1.legend(fontsize=7, loc="upper center", ncol=2)
    a_pc1.set_title("PC1 of the uncentered drift", fontsize=9)
    a_pc1.set_ylabel("PC1 explained (% of drift energy)")

    if _bars(a_k95, [_val(x.k95_rownorm) for x in s], colors, labels, "a PCA", "row-normalised drifts (bars)"):
        a_k95.plot(range(len(s)), [_val(x.k95_raw) for x in s], "k_", ms=18, mew=2, ls="none", label="raw drifts (—)")
        P.integer_axis(a_k95, "y")
        top = np.nanmax([_val(x.k95_rownorm) for x in s] + [_val(x.k95_raw) for x in s])
        a_k95.set_ylim(0, 1.3 * top + 0.5)
        a_k95.legend(fontsize=7, loc="upper center", ncol=2)
    a_k95.set_title("k95: components for 95 % of the drift", fontsize=9)
    a_k95.set_ylabel("k95 (components)")

    drawn = False
    for r, c in zip(runs, colors):
        ex = r.get("pca.rownorm.explained") or []
        if len(ex) >= 2:
            k = np.arange(1, len(ex) + 1)
            a_spec.plot(k, P.positive(100 * np.asarray(ex, dtype=float)), ".-", color=c, lw=1.2, label=r.label or r.name)
            drawn = True
    a_spec.set_title("explained-variance spectra (row-normalised)", fontsize=9)
    if drawn:
        a_spec.set_yscale("log")
        a_spec.set_xlabel("component k")
        a_spec.set_ylabel("σ_k² / Σσ² (%, log)")
        P.integer_axis(a_spec, "x")
    else:
        P.not_enough(a_spec, "not enough snapshots for a spectrum")

    drift = [_val(x.drift_final) for x in s]
    if _bars(a_drift, drift, colors, labels, "a drift"):
        if P.log_if_wide(a_drift, drift):
            a_drift.set_ylabel("‖θ(final) − θ(anchor)‖ (parameter units, log)")
        else:
            a_drift.set_ylabel("‖θ(final) − θ(anchor)‖ (parameter units)")
    a_drift.set_title("drift from the anchor (trunk)", fontsize=9)

    grad = [_val(x.grad_mean_abs_cos) for x in s]
    upd_rec = [_val(x.update_abs_cos_recorded) for x in s]
    upd = [_val(x.update_mean_abs_cos) for x in s]
    a_align.set_title("gradient vs update alignment with the backbone", fontsize=9)
    if np.isfinite(np.array(grad + upd_rec + upd)).any():
        i = np.arange(len(s))
        a_align.plot(i, P.positive(grad), "o", color="tab:blue", ms=7, ls="none", label="per-batch gradient (recorded, rolling v_b)")
        a_align.plot(i, P.positive(upd_rec), "s", color="tab:red", ms=7, ls="none", label="Δ-step update (recorded, rolling v_b)")
        a_align.plot(i, P.positive(upd), "D", color="tab:orange", ms=5, ls="none", label="update (analysis, global v_b)")
        floors = sorted({_val(x.noise_floor) for x in s} - {np.nan})
        for f in [f for f in floors if np.isfinite(f)][:1]:
            a_align.axhline(f, color="0.4", ls="--", lw=0.9, label=f"noise floor √(2/πD) = {f:.1e}")
        a_align.set_yscale("log")
        lo, hi = a_align.get_ylim()
        a_align.set_ylim(lo, hi * 30)  # headroom for the legend above the points
        a_align.set_ylabel("mean |cos| with v_b (log)")
        a_align.legend(fontsize=6.5, loc="upper center", ncol=2)
        _run_axis(a_align, labels)
        for j, g in enumerate(grad):
            if np.isfinite(g) and np.isfinite(upd_rec[j]):
                a_align.annotate(f"{upd_rec[j] / g:.0f}×", (j, upd_rec[j]), textcoords="offset points", xytext=(6, 0),
                                 fontsize=7, va="center")
    else:
        P.not_enough(a_align, "no alignment measured: train with callbacks=alignment")

    best = [eval_best(r, "p_ood")[0] for r in runs]
    if _bars(a_pood, best, colors, labels, "p_ood evaluations"):
        for t, rule in sorted({chance_threshold(r) for r in runs}):
            a_pood.axhline(t, color="0.4", ls="--", lw=0.9, label=f"chance ({rule}) = {t:.3f}")
        a_pood.set_ylim(0, 1.2)
        a_pood.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        a_pood.legend(fontsize=7, loc="upper center")
    a_pood.set_title("best OOD probe accuracy", fontsize=9)
    a_pood.set_ylabel("best p_ood (fraction of probes)")

    fig.suptitle("Does each run have a backbone? (one colour per seed group, runs named under the bars; PCA and drift from each run's own analysis; "
                 f"anchor step {', '.join(sorted({str(x.anchor_step) for x in s}))})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return P.save(plt, fig, Path(out_dir) / "headline.png").name
