"""Paper-style figures of the default analysis (matplotlib Agg, PNG).

* ``spectrum.png``: explained variance per component, raw and row-normalised (log scale), with
  cumulative curves and k95 (paper §3.1 / §4.1).
* ``decomposition.png``: a(t), ‖r(t)‖, ‖Δθ‖ and f_b(t), with p_ood on a twin axis (paper Fig. A).
* ``loglog.png``: |a(t)| and ‖r(t)‖ on log-log axes with the fitted power laws (paper §4.5).
* ``rotation.png``: ρ between adjacent windows and A_E / A_L (paper §4.2–4.4).
* ``update_alignment.png``: signed and |cos(u, v_b)| with the random-direction noise floor (§4.8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _title(summary: dict) -> str:
    return f"subset={summary['subset']}  anchor={summary['anchor_step']}  cadence={summary['cadence']}  T={summary['n_steps']}  D={summary['dim']:,}"


def make_figures(out_dir: Path, summary: dict, steps, dec, metrics, p_raw, p_rn, roll, phases, gram, update_res=None) -> list[str]:
    """Write the PNGs; returns their file names."""
    plt = _plt()
    out_dir = Path(out_dir)
    files = []
    st = np.asarray(steps)

    # spectrum
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, pr, lab in ((axes[0], p_raw, "raw"), (axes[1], p_rn, "row-normalised")):
        ex = pr.pca.explained
        k = np.arange(1, len(ex) + 1)
        ax.bar(k, 100 * ex, color="#4C72B0", label="explained %")
        ax.set_yscale("log")
        ax.set_xlabel("component k")
        ax.set_ylabel("explained variance (%)")
        ax2 = ax.twinx()
        ax2.plot(k, 100 * pr.pca.cumulative, "k.-", lw=1, ms=3, label="cumulative")
        ax2.axhline(95, color="grey", ls=":", lw=0.8)
        ax2.set_ylim(0, 101)
        ax2.grid(False)
        ax.set_title(f"{lab}: PC1 {100 * ex[0]:.1f} %, k95={pr.pca.k95}, k99={pr.pca.k99}")
    fig.suptitle("Uncentered PCA of drifts  " + _title(summary), fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.93, bottom=0.14, top=0.84, wspace=0.45)
    fig.savefig(out_dir / "spectrum.png")
    plt.close(fig)
    files.append("spectrum.png")

    # decomposition
    from backbone_lab.analysis.eval_metrics import align

    p_ood = align(metrics, st, "p_ood")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    ax.plot(st, dec.a, "-o", ms=2.5, label="a(t)")
    ax.plot(st, dec.norm_r, "-s", ms=2.5, label="‖r(t)‖")
    ax.plot(st, dec.norm_delta, "--", color="grey", lw=1, label="‖Δθ(t)‖")
    ax.set_xlabel("step")
    ax.set_ylabel("parameter distance")
    if np.isfinite(p_ood).sum() >= 2:
        ax2 = ax.twinx()
        m = np.isfinite(p_ood)
        ax2.plot(st[m], p_ood[m], color="#C44E52", lw=1, alpha=0.8, label="p_ood")
        ax2.set_ylabel("p_ood", color="#C44E52")
        ax2.set_ylim(0, 1)
        ax2.grid(False)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("backbone decomposition (sign: a(final) > 0)")
    ax = axes[1]
    ax.plot(st, 100 * dec.backbone_frac, "-o", ms=2.5, color="#55A868")
    ax.set_xlabel("step")
    ax.set_ylabel("backbone fraction f_b (%)")
    ds = summary["decomposition"]
    ax.set_title(f"f_b final {100 * ds['backbone_frac_final']:.1f} %, mean {100 * (ds['backbone_frac_mean'] or 0):.1f} %")
    fig.suptitle(_title(summary), fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.97, bottom=0.14, top=0.86, wspace=0.35)
    fig.savefig(out_dir / "decomposition.png")
    plt.close(fig)
    files.append("decomposition.png")

    # log-log with fits
    fits = summary.get("fits", {}).get("by_window", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, y, key, lab in ((axes[0], np.abs(dec.a), "a", "|a(t)|"), (axes[1], dec.norm_r, "r", "‖r(t)‖")):
        m = (st > 0) & (y > 0)
        ax.loglog(st[m], y[m], "ko", ms=3, alpha=0.6, label="data")
        for i, (name, f) in enumerate(fits.items()):
            g, C = f.get(f"gamma_{key}"), f.get(f"C_{key}")
            if g is None:
                continue
            lo, hi = max(f["lo"], st[m][0] if m.any() else 1), f["hi"]
            t = np.linspace(lo, hi, 50)
            ax.loglog(t, C * t**g, lw=1.5, color=f"C{i}", label=f"{name}: γ={g:.2f} (R²={f[f'R2_{key}']:.2f}, n={f[f'n_{key}']})")
        ax.set_xlabel("step")
        ax.set_ylabel(lab)
        ax.legend(fontsize=6)
    fig.suptitle("power-law fits  " + _title(summary), fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.86, wspace=0.25)
    fig.savefig(out_dir / "loglog.png")
    plt.close(fig)
    files.append("loglog.png")

    # rotation
    if roll is not None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot(roll.rho_step, roll.rho, "-o", ms=3, label="ρ adjacent windows")
        if phases is not None:
            ax.plot(roll.centre, roll.alignment_with(gram, phases.v_early), "-", label="A_E = |⟨v_roll, v_E⟩|")
            ax.plot(roll.centre, roll.alignment_with(gram, phases.v_late), "-", label="A_L = |⟨v_roll, v_L⟩|")
            ax.axvline(phases.boundary, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("step (window centre)")
        ax.set_ylabel("|cos|")
        rs = summary.get("rolling", {})
        ax.set_title(f"rolling backbone (W={roll.window}): mean ρ {rs.get('rho_mean', float('nan')):.3f}, min {rs.get('rho_min', float('nan')):.3f}")
        ax.legend(fontsize=7)
        fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.9)
        fig.savefig(out_dir / "rotation.png")
        plt.close(fig)
        files.append("rotation.png")

    # update alignment
    if update_res is not None and len(update_res["step"]):
        nf = summary["update_alignment"]["noise_floor"]["mean_abs_cos"]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot(update_res["step"], update_res["abs_cos"], "-o", ms=3, label="|cos(u, v_b)|")
        ax.plot(update_res["step"], update_res["cos"], "-", lw=1, alpha=0.7, label="signed cos")
        ax.axhline(nf, color="#C44E52", ls="--", lw=1, label=f"noise floor √(2/πD) = {nf:.1e}")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("step (interval midpoint)")
        ax.set_ylabel("cos")
        ax.set_title("update–backbone alignment (consecutive checkpoints)")
        ax.legend(fontsize=7)
        fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.9)
        fig.savefig(out_dir / "update_alignment.png")
        plt.close(fig)
        files.append("update_alignment.png")
    return files
