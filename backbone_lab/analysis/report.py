"""``report.md``: a short human-readable summary with the figures and key numbers."""

from __future__ import annotations

from pathlib import Path


def _fmt(x, nd: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def write_report(out_dir: Path, s: dict) -> Path:
    """Write ``<out_dir>/report.md`` from a summary dict; returns the path."""
    L = []
    L.append(f"# Backbone analysis — `{s['run_dir']}`\n")
    L.append(f"Subset **{s['subset']}** (D = {s['dim']:,}), anchor step **{s['anchor_step']}**, cadence {s['cadence']}, "
             f"T = {s['n_steps']} snapshots ({s['steps'][0]}…{s['steps'][-1]}), stored dtype {s['trajectory']['dtype']}, "
             f"crc verified: {s['trajectory']['crc_verified']}.\n")
    pr, pn = s["pca"]["raw"], s["pca"]["rownorm"]
    L.append("## Uncentered PCA (SPEC §5.1)\n")
    L.append("| rows | PC1 % | PC2 % | k95 | k99 | n rows |\n|---|---|---|---|---|---|")
    L.append(f"| raw | {_fmt(pr['pc1_pct'], 2)} | {_fmt(pr['pc2_pct'], 2)} | {pr['k95']} | {pr['k99']} | {pr['n_rows']} |")
    L.append(f"| row-normalised | {_fmt(pn['pc1_pct'], 2)} | {_fmt(pn['pc2_pct'], 2)} | {pn['k95']} | {pn['k99']} | {pn['n_rows']} |")
    L.append(f"\nDenominator: {s['pca']['denominator_rule']}.\n\n![spectrum](spectrum.png)\n")
    d = s["decomposition"]
    L.append("## Backbone decomposition (SPEC §5.3)\n")
    L.append(f"v_b = global {d['backbone_normalisation']} PC1, sign convention {d['sign_convention']} (flipped: {d['sign_flipped']}). "
             f"a(final) = {_fmt(d['a_final'])}, ‖r(final)‖ = {_fmt(d['norm_r_final'])}, ‖Δθ(final)‖ = {_fmt(d['norm_delta_final'])}; "
             f"f_b final {_fmt(100 * d['backbone_frac_final'], 1)} %, mean over steps {_fmt(100 * (d['backbone_frac_mean'] or 0), 1)} %; "
             f"a(t) peaks at {_fmt(d['a_peak'])} (step {d['a_peak_step']}).\n\n![decomposition](decomposition.png)\n")
    ro = s.get("rolling", {})
    ph = s.get("phases", {})
    L.append("## Rolling backbone and phases (SPEC §5.4–5.5)\n")
    if "skipped" in ro:
        L.append(f"Rolling windows skipped: {ro['skipped']}.\n")
    else:
        L.append(f"W = {ro['window']}, re-anchored, row-normalised: mean ρ {_fmt(ro['rho_mean'])}, max {_fmt(ro['rho_max'])}, "
                 f"min {_fmt(ro['rho_min'])} at step {_fmt(ro['rho_argmin_step'], 0)}.\n")
    if "skipped" in ph:
        L.append(f"Phase backbones skipped: {ph['skipped']}.\n")
    else:
        L.append(f"Boundary {ph['boundary_step']}: PC1 early {_fmt(ph['pc1_early_pct'], 1)} %, late {_fmt(ph['pc1_late_pct'], 1)} %, "
                 f"|⟨v_E, v_L⟩| = {_fmt(ph['abs_overlap_vE_vL'])} ({_fmt(ph['angle_deg'], 1)}°).\n")
    if "skipped" not in ro:
        L.append("![rotation](rotation.png)\n")
    L.append("## Power laws (SPEC §5.6) and correlations (§5.7)\n")
    L.append("| window | γ_a | R²_a | γ_r | R²_r | n | corr(p_ood, ‖r‖) [95 % CI] |\n|---|---|---|---|---|---|---|")
    corr = s.get("correlations", {}).get("by_window", {})
    for name, f in s["fits"]["by_window"].items():
        c = corr.get(name, {})
        cs = "—" if not c or c.get("r") is None else f"{c['r']:+.3f} [{_fmt(c.get('ci_low'), 2)}, {_fmt(c.get('ci_high'), 2)}] (n={c['n']})"
        L.append(f"| {name} | {_fmt(f['gamma_a'])} | {_fmt(f['R2_a'])} | {_fmt(f['gamma_r'])} | {_fmt(f['R2_r'])} | {f['n_a']} | {cs} |")
    if corr.get("full", {}).get("r") is not None:
        c = corr["full"]
        L.append(f"\nFull run: corr = {c['r']:+.3f} [{_fmt(c['ci_low'], 2)}, {_fmt(c['ci_high'], 2)}], n = {c['n']}.")
    L.append("\n![loglog](loglog.png)\n")
    ua = s["update_alignment"]
    L.append("## Update–backbone alignment (SPEC §5.8)\n")
    c = ua["consecutive"]
    L.append(f"Consecutive checkpoints: mean |cos| {_fmt(c['mean_abs_cos'])}, early (≤ {c.get('early_max_step')}) "
             f"{_fmt(c.get('mean_abs_cos_early'))}, sign flip at {c['sign_flip_step']}; random-direction floor "
             f"√(2/πD) = {ua['noise_floor']['mean_abs_cos']:.2e} (×{_fmt(c.get('mean_over_noise_floor'), 0)}).\n")
    if "fixed_lag" in ua:
        fl = ua["fixed_lag"]
        L.append(f"Fixed lag {fl['lag']}: mean |cos| {_fmt(fl['mean_abs_cos'])}, early {_fmt(fl.get('mean_abs_cos_early'))}.\n")
    L.append("![update alignment](update_alignment.png)\n")
    if "per_block" in s:
        L.append("## Per block (SPEC §5.2, raw PCA)\n")
        L.append("| block | D | PC1 % | k95 | k99 | mean \\|cos(u, v_b)\\| |\n|---|---|---|---|---|---|")
        for n, b in s["per_block"]["blocks"].items():
            L.append(f"| {n} | {b['dim']:,} | {_fmt(b['pc1_pct'], 1)} | {b['k95']} | {b['k99']} | {_fmt(b['update_alignment']['mean_abs_cos'])} |")
        L.append("")
    if "switching" in s:
        sw = s["switching"]
        L.append("## Switching directions (SPEC §5.12)\n")
        L.append(f"Peaks {sw['peaks']}; troughs {sw['troughs']}; {len(sw['switch_pairs'])} switch pairs.\n")
        g = sw.get("geometry")
        if g:
            for p in g["pairs"][:10]:
                L.append(f"- ({p['peak']}, {p['trough']}): ‖Δθ‖ {_fmt(p['norm'], 2)}, ⟨v_sw, v_b⟩ {p['backbone_cos']:+.3f}, share {_fmt(p['backbone_share'])}, E_2:k {_fmt(p.get('E_2_k'))}")
            dm = g.get("dimensionality", {})
            if dm:
                bl = dm.get("same_regime_baseline", {})
                L.append(f"\nDimensionality: participation ratio {_fmt(dm['switch']['participation_ratio'], 2)} (k95 {dm['switch']['k95']}) vs "
                         f"same-regime baseline {_fmt(bl.get('participation_ratio'), 2)} (k95 {bl.get('k95', '—')}) and random "
                         f"{_fmt(dm['random_baseline_participation_ratio'], 2)}.\n")
    diag_figs = dict(s.get("training_diagnostics", {}).get("figures", {}))
    for entry in (s.get("diagnostics") or {}).values():
        if isinstance(entry, dict):
            out = Path(out_dir)
            diag_figs.update({k: str(Path(v).resolve().relative_to(out.resolve()))
                              for k, v in entry.get("figures", {}).items() if Path(v).resolve().is_relative_to(out.resolve())})
    if diag_figs:
        L.append("## Diagnostics: gradient vs update alignment, Fisher along the backbone (paper Figs. 2-3)\n")
        L.append("Per-batch gradient |cos| with the backbone vs the accumulated update's, beside the noise floor; "
                 "Rayleigh quotient q(v_b) of the empirical Fisher and the anisotropy q(v_b)/mean q(random). "
                 "CSV files: `diagnostics/`.\n")
        for name, rel in sorted(diag_figs.items()):
            L.append(f"![{name}]({rel})\n")
    if "reheating" in s:
        r = s["reheating"]
        L.append("## Reheating projection (W16)\n")
        L.append(f"Source {r['source_run']} (anchor {r['source_anchor_step']}), a_source(final) = {_fmt(r['source_a_final'])}; "
                 f"max |Δa|/a over the reheating run = {_fmt(r['max_abs_a_rel_change'])}.\n")
    L.append(f"\n_Elapsed {s.get('elapsed_seconds', 0):.1f} s (Gram stream {s.get('gram_stream_seconds', 0):.1f} s). "
             "All parameters: `summary.json['config']`._\n")
    p = Path(out_dir) / "report.md"
    p.write_text("\n".join(L))
    return p
