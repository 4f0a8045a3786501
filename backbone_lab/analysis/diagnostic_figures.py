"""Figures of the diagnostics CSVs (paper Fig. 2 and Fig. 3); matplotlib, Agg backend.

    plot_alignment(run_dir, out_png)  # per-batch gradient vs Δ-step update |cos| with the noise floor
    plot_fisher(run_dir, out_png)     # q(v_b) (log scale) over steps, q of random directions, anisotropy

Both read `<run_dir>/diagnostics/*.csv` (or a `source` sub-folder such as `offline`; or, when
`run_dir` itself holds the CSVs, that folder), de-duplicate on step, and return the written
path, or None when there is nothing to plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backbone_lab.analysis.diagnostic_records import FILES, read_records
from backbone_lab.run_dir import RunDir


def _dir(run_dir, source: str | None) -> Path:
    """`<run_dir>/diagnostics[/<source>]`; a folder that itself holds the CSVs is used as is."""
    p = Path(run_dir)
    if source is None and any((p / f).exists() for f in FILES.values()):
        return p
    d = RunDir(p).diagnostics
    return d / source if source else d


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out_png) -> Path:
    fig.tight_layout()
    from backbone_lab.durable import atomic_savefig, output_folder

    out = Path(out_png)
    output_folder(out.parent)
    try:
        atomic_savefig(fig, out, dpi=120, bbox_inches="tight")  # legends placed beside the axes stay in
    finally:
        plt.close(fig)
    return out


def _pos(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, x, np.nan)


def plot_alignment(run_dir, out_png, source: str | None = None) -> Path | None:
    """Paper Fig. 2: |cos(g, v_b)| of per-batch gradients and |cos(Δθ, v_b)| of Δ-step updates over
    steps on a log axis, with the analytic noise floor √(2/(πD)); signed update cosine below."""
    d = _dir(run_dir, source)
    g = read_records(d / FILES["grad_alignment"])
    u = read_records(d / FILES["update_alignment"])
    if not g and not u:
        return None
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    floor = None
    if g:
        label = "per-batch gradient |cos(g, v_b)|"
        ax.plot(g["step"], _pos(g["abs_cos"]), "o-", ms=3, lw=1, color="tab:blue", label=label)
        if "abs_cos_std" in g and np.isfinite(g["abs_cos_std"]).any():
            lo, hi = g["abs_cos"] - g["abs_cos_std"], g["abs_cos"] + g["abs_cos_std"]
            ax.fill_between(g["step"], _pos(lo), _pos(hi), color="tab:blue", alpha=0.15)
        for key, col, lab in (("lm_abs_cos", "tab:cyan", "∇L_LM"), ("probe_abs_cos", "tab:purple", "∇L_probe")):
            if key in g and np.isfinite(g[key]).any() and not np.allclose(g[key], g["abs_cos"], equal_nan=True):
                ax.plot(g["step"], _pos(g[key]), ".", ms=3, color=col, label=f"{lab} |cos|")
        floor = float(np.nanmedian(g["noise_floor"]))
    if u:
        delta = int(np.nanmedian(u["delta"])) if "delta" in u else None
        ax.plot(u["step"], _pos(u["abs_cos"]), "s-", ms=4, lw=1.5, color="tab:red",
                label="accumulated update |cos(Δθ, v_b)|" + (f" (Δ = {delta})" if delta else ""))
        ax2.plot(u["step"], u["cos"], "s-", ms=3, color="tab:red")
        ax2.axhline(0.0, color="k", lw=0.8)
        floor = floor if floor is not None else float(np.nanmedian(u["noise_floor"]))
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=f"noise floor √(2/πD) = {floor:.1e}")
    ax.set_yscale("log")
    ax.set_ylabel("|cos| with the backbone (log)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Gradient vs update alignment with the backbone")
    ax2.set_ylabel("signed update cos")
    ax2.set_xlabel("optimizer step")
    return _save(plt, fig, out_png)


def plot_fisher(run_dir, out_png, source: str | None = None, estimator: str | None = None) -> Path | None:
    """Paper Fig. 3: q(v_b) over steps (log scale) with q(PC2), q(switching) and mean q(random);
    anisotropy α = q(v_b)/mean q(random) on a second panel. Both estimators if present."""
    d = _dir(run_dir, source)
    ests = [estimator] if estimator else ["minibatch", "per_sample"]
    data = {e: read_records(d / FILES[f"fisher_{e}"]) for e in ests}
    data = {e: r for e, r in data.items() if r}
    if not data:
        return None
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    styles = {"minibatch": "-", "per_sample": "--"}
    for e, r in data.items():
        ls = styles.get(e, "-")
        ax.plot(r["step"], _pos(r["q_backbone"]), "o" + ls, ms=4, color="tab:red", label=f"q(v_b) [{e}]")
        for key, col, lab in (("q_pc2", "tab:orange", "q(PC2)"), ("q_switching", "tab:green", "q(v_sw)"),
                              ("q_random_mean", "gray", "mean q(random, orth. to v_b)")):
            if key in r and np.isfinite(r[key]).any():
                ax.plot(r["step"], _pos(r[key]), "." + ls, ms=4, color=col, label=f"{lab} [{e}]")
        ax2.plot(r["step"], _pos(r["anisotropy"]), "o" + ls, ms=4, color="tab:blue", label=f"α [{e}]")
    ax.set_yscale("log")
    ax.set_ylabel("Rayleigh quotient vᵀF̂v / vᵀv\n((loss / parameter)², log)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Fisher curvature along the backbone")
    ax2.set_yscale("log")
    ax2.axhline(1.0, color="k", lw=0.8, ls=":")
    ax2.set_ylabel("anisotropy α = q(v_b) / mean q(random)\n(ratio, log)")
    ax2.set_xlabel("optimizer step")
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, out_png)
