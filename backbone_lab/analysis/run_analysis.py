"""The default analysis of one run: ``run_analysis(run_dir, cfg) -> dict``.

One streamed pass over the snapshots builds the drift Grams (subset + optional per-block); every
analysis below is algebra on those T×T matrices:

* global uncentered PCA, raw and row-normalised (SPEC §5.1, exact denominators, W2);
* backbone decomposition a(t), ‖r(t)‖, f_b (§5.3, sign a(final) > 0, W9);
* rolling-window backbones and ρ (§5.4), phase backbones v_E / v_L, A_E / A_L (§5.5);
* power-law fits (§5.6) and corr(p_ood, ‖r‖) with bootstrap CIs (§5.7) when metrics exist;
* update–backbone alignment (§5.8 variants 1 and 2) with the analytic noise floor;
* per-block PCA (Table 2), per-block c(w) (§5.2); switching directions (§5.12);
* optional reheating projection onto a source run's backbone (W16) and extra diagnostics.

Outputs go to ``<run_dir>/analysis/``: summary.json (keys in docs/ANALYSIS.md), CSV time
series, gram npz, PNG figures and report.md. Every block of summary.json records its parameters.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.decomposition import decompose, fix_sign
from backbone_lab.analysis.eval_metrics import align, read_eval_metrics
from backbone_lab.analysis.gram import DriftGram, coeff_rows, reconstruct_directions, stream_grams
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.phases import default_boundary, phase_backbones
from backbone_lab.analysis.powerlaw import default_windows, regime_fits, windowed_correlations
from backbone_lab.analysis.rolling import per_block_cw, rolling_backbones
from backbone_lab.analysis.switching import detect_extrema, switch_pairs, switching_geometry
from backbone_lab.analysis.update_alignment import (
    alignment_summary,
    consecutive_pairs,
    lag_pairs,
    noise_floor,
    update_alignment,
)
from backbone_lab.trajectory.store import TrajectoryError, TrajectoryReader, resolve_trajectory_dir

# Extra offline diagnostics: name -> fn(context: dict) -> JSON-serialisable dict.
# context keys: run_dir, out_dir, cfg, reader, grams, steps, anchor_step, backbone_coeffs, metrics, summary.
DIAGNOSTICS: dict[str, Callable[[dict], dict]] = {}

ProgressFn = Callable[[str, int, int], None]


def register_diagnostic(name: str) -> Callable:
    """Decorator registering an offline diagnostic under ``name`` (used via cfg.diagnostics)."""

    def deco(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        DIAGNOSTICS[name] = fn
        return fn

    return deco


def resolve_diagnostic(name: str) -> Callable[[dict], dict]:
    """A registered diagnostic, or ``package.module:function`` imported on demand."""
    if name in DIAGNOSTICS:
        return DIAGNOSTICS[name]
    if ":" in name:
        import importlib

        mod, _, fn = name.partition(":")
        try:
            return getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"diagnostic {name!r} cannot be imported ({e})") from None
    raise ValueError(f"unknown diagnostic {name!r}; registered: {sorted(DIAGNOSTICS)} (or give module:function)")


# ----------------------------------------------------------------------------- step selection
def auto_cadence(steps: Sequence[int]) -> int:
    """Largest step spacing that occurs at least twice (0 = none repeats: use all steps)."""
    d = Counter(int(b - a) for a, b in zip(steps[:-1], steps[1:]))
    rep = [k for k, v in d.items() if v >= 2 and k > 0]
    return max(rep) if rep else 0


def select_steps(stored: Sequence[int], cfg: AnalysisConfig) -> tuple[list[int], int, int]:
    """(analysed steps incl. the anchor first, anchor step, cadence used)."""
    ex = set(int(s) for s in cfg.exclude_steps)
    steps = [int(s) for s in stored if int(s) not in ex and (cfg.max_step is None or s <= cfg.max_step)]
    if not steps:
        raise TrajectoryError("no snapshot left after exclude_steps/max_step; relax the selection")
    anchor = steps[0] if cfg.anchor_step is None else int(cfg.anchor_step)
    if anchor not in steps:
        raise TrajectoryError(f"anchor_step={anchor} is not a stored (non-excluded) step; stored: {steps[:5]}...")
    after = [s for s in steps if s > anchor]
    cad = auto_cadence(after) if cfg.cadence is None else int(cfg.cadence)
    if cad > 0:
        sel = [s for s in after if s % cad == 0]
        if cfg.cadence is None and len(sel) < 3:
            sel, cad = after, 0
    else:
        sel = after
    if len(sel) < 2:
        raise TrajectoryError(f"only {len(sel)} snapshot(s) after the anchor {anchor} at cadence {cad}; need >= 2 (set cadence=0?)")
    return [anchor] + sel, anchor, cad


def _f(x: Any) -> Any:
    """JSON-safe floats (NaN/inf -> None), numpy scalars/arrays -> Python."""
    if isinstance(x, dict):
        return {str(k): _f(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_f(v) for v in x]
    if isinstance(x, np.ndarray):
        return _f(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if (isinstance(v, float) and not math.isfinite(v)) else v for v in r])


def _out_dir(run_dir: Path, traj_dir: Path, cfg: AnalysisConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if traj_dir != run_dir:
        return run_dir / "analysis"
    # given the trajectory folder itself
    return (traj_dir.parent if traj_dir.name == "trajectory" else traj_dir) / "analysis"


# ----------------------------------------------------------------------------- main entry
def run_analysis(run_dir: str | os.PathLike, cfg: AnalysisConfig | None = None, progress: ProgressFn | None = None) -> dict:
    """Default analysis of a run dir (or a bare trajectory folder); returns the summary dict.

    Args:
        run_dir: ``<run_dir>`` with ``trajectory/`` (+ optional ``eval_metrics.csv``), or the
            trajectory folder itself.
        cfg: parameters (default ``AnalysisConfig()``).
        progress: optional callback(stage, done, total) for long streams.
    Raises:
        TrajectoryError: missing/corrupt run dir or snapshot (one-line message).
    """
    cfg = cfg or AnalysisConfig()
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    traj_dir = resolve_trajectory_dir(run_dir)
    reader = TrajectoryReader(traj_dir, verify=cfg.verify_crc, check_files=False)  # streamed steps are checked
    out_dir = _out_dir(run_dir, traj_dir, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir = run_dir if traj_dir != run_dir else traj_dir.parent
    metrics = read_eval_metrics(metrics_dir / "eval_metrics.csv")

    steps, anchor, cadence = select_steps(reader.steps, cfg)
    rows_steps = steps[1:]

    # ---- groups: analysis subset (+ per-block subsets) -> one streamed pass
    groups = {cfg.subset: reader.subset_columns(cfg.subset)}
    block_names: list[str] = []
    if cfg.per_block and cfg.subset == "trunk":
        ln = cfg.per_block_ln
        if ln is None:
            ln = reader.has_non_trunk_block_tensors
        for b in reader.blocks:
            name = f"block{b}_ln" if ln else f"block{b}"
            groups[name] = reader.subset_columns(name)
            block_names.append(name)

    cb = (lambda d, t: progress("gram", d, t)) if progress else None
    grams = stream_grams(reader, groups, steps=steps, ref=anchor, chunk_bytes=cfg.chunk_mb << 20,
                         device=cfg.device, verify=cfg.verify_crc, progress=cb)
    gram = grams[cfg.subset]
    T = len(steps)
    ai = gram.index(anchor)
    ri = gram.indices(rows_steps)
    common = {"subset": cfg.subset, "anchor_step": anchor, "cadence": cadence, "n_steps": T, "dim": gram.dim}

    summary: dict[str, Any] = {
        "format": "backbone_lab.analysis.summary",
        "version": 1,
        "run_dir": str(run_dir),
        "out_dir": str(out_dir),
        "trajectory": {"path": str(traj_dir), "dtype": reader.dtype, "stored_subset": reader.subset, "n_stored": len(reader.steps),
                       "dim_stored": reader.dim, "crc_verified": gram.meta["crc_verified"], "meta": reader.meta},
        "config": cfg.to_dict(),
        "steps": steps,
        **{k: v for k, v in common.items()},
    }

    # ---- global PCA, raw and row-normalised
    C = coeff_rows(T, ri, ai)
    p_raw = pca_rows(gram, C, row_normalise=False, top10_denominator=cfg.top10_denominator, n_dirs=max(cfg.switch_top_k, 10))
    p_rn = pca_rows(gram, C, row_normalise=True, top10_denominator=cfg.top10_denominator, n_dirs=10)
    summary["pca"] = {
        "raw": {**p_raw.pca.summary(20), "normalisation": "raw", **common},
        "rownorm": {**p_rn.pca.summary(20), "normalisation": "rownorm", **common},
        "denominator_rule": "top-10 sigma^2 (legacy W2)" if cfg.top10_denominator else "total sum of sigma^2 over all rows",
    }
    main_pca = p_rn if cfg.normalisation == "rownorm" else p_raw

    # ---- decomposition
    dec = decompose(gram, main_pca.v1, steps, anchor)
    vb = dec.coeffs
    summary["decomposition"] = {**dec.summary(), "backbone_normalisation": cfg.normalisation, **common}

    # ---- eval metrics aligned with the analysed steps
    st_arr = np.asarray(steps)
    p_ood = align(metrics, st_arr, "p_ood")
    have_p = bool(np.isfinite(p_ood[1:]).sum() >= 3)
    summary["eval_metrics"] = {"present": metrics is not None, "has_p_ood": have_p,
                               "n_rows": int(len(metrics["step"])) if metrics else 0}

    # ---- rolling windows + phases
    roll = None
    if len(rows_steps) >= cfg.rolling_window + 1:
        roll = rolling_backbones(gram, rows_steps, window=cfg.rolling_window, stride=cfg.rolling_stride)
        summary["rolling"] = {**roll.summary(), **common}
    else:
        summary["rolling"] = {"skipped": f"needs > {cfg.rolling_window} analysed steps after the anchor, have {len(rows_steps)}"}
    phases = None
    try:
        boundary = cfg.phase_boundary if cfg.phase_boundary is not None else default_boundary(rows_steps)
        phases = phase_backbones(gram, steps, anchor, boundary)
        summary["phases"] = {**phases.summary(), "normalisation": "rownorm", **common}
        if roll is not None:
            ae = roll.alignment_with(gram, phases.v_early)
            al = roll.alignment_with(gram, phases.v_late)
            summary["phases"]["A_E_mean"] = float(ae.mean())
            summary["phases"]["A_L_mean"] = float(al.mean())
    except ValueError as e:
        summary["phases"] = {"skipped": str(e)}

    # ---- power laws and correlations
    windows = [tuple(w) for w in cfg.fit_windows] if cfg.fit_windows else default_windows(int(st_arr[-1]))
    summary["fits"] = {"windows": [list(w) for w in windows], "rule": "OLS ln y = g ln t + ln C on lo < t <= hi, y > 0; R2 in log space",
                       "a": "abs(a(t))", "by_window": regime_fits(st_arr, dec.a, dec.norm_r, windows), **common}
    if have_p:
        summary["correlations"] = {
            "quantity": "pearson(p_ood, ||r||) over analysed steps" + (" with ||r|| > 0" if cfg.corr_exclude_zero_r else " with t > 0 (anchor kept)"),
            "bootstrap": {"n_boot": cfg.corr_bootstrap, "block": cfg.corr_block, "seed": cfg.seed, "ci": 0.95},
            "by_window": windowed_correlations(st_arr, p_ood, dec.norm_r, windows, n_boot=cfg.corr_bootstrap, seed=cfg.seed, block=cfg.corr_block,
                                                 exclude_zero_r=cfg.corr_exclude_zero_r),
            **common,
        }

    # ---- update alignment (variant 2: global sign-fixed backbone, fixed lag; + consecutive)
    lag = cfg.update_lag or (cadence if cadence > 0 else None)
    ua_rows: list[list[Any]] = []
    ua: dict[str, Any] = {"noise_floor": noise_floor(gram.dim), **common, "backbone": f"global {cfg.normalisation} PC1, sign a(final)>0"}
    pairs_c = consecutive_pairs(steps)
    res_c = update_alignment(gram, vb, pairs_c, label="mid")
    ua["consecutive"] = {**alignment_summary(res_c, cfg.early_max_step, gram.dim), "label": "integer midpoint"}
    for i in range(len(pairs_c)):
        ua_rows.append([cfg.subset, "consecutive", int(res_c["step"][i]), int(res_c["step_from"][i]), int(res_c["step_to"][i]), float(res_c["cos"][i]), float(res_c["abs_cos"][i])])
    if lag:
        pairs_l = lag_pairs(steps, lag)
        if pairs_l:
            res_l = update_alignment(gram, vb, pairs_l, label="end")
            ua["fixed_lag"] = {**alignment_summary(res_l, cfg.early_max_step, gram.dim), "lag": lag, "label": "interval end"}
    summary["update_alignment"] = ua

    # ---- per-block: PCA (Table 2), update alignment (variant 1), c(w)
    block_vb: dict[str, np.ndarray] = {}
    if block_names:
        pb: dict[str, Any] = {"normalisation": "raw", "anchor_step": anchor, "cadence": cadence,
                              "sign": "unfixed (legacy)" if cfg.legacy_unsigned_blocks else "a(final) > 0", "blocks": {}}
        for name in block_names:
            g = grams[name]
            pr = pca_rows(g, coeff_rows(T, ri, ai), row_normalise=False, n_dirs=1)
            c = pr.v1
            if not cfg.legacy_unsigned_blocks:
                c, _ = fix_sign(g, c, ai, T - 1)
            block_vb[name] = c
            r = update_alignment(g, c, pairs_c, label="mid")
            for i in range(len(pairs_c)):
                ua_rows.append([name, "consecutive", int(r["step"][i]), int(r["step_from"][i]), int(r["step_to"][i]), float(r["cos"][i]), float(r["abs_cos"][i])])
            pb["blocks"][name] = {"pc1_pct": 100 * pr.pca.pc1, "k95": pr.pca.k95, "k99": pr.pca.k99, "dim": g.dim,
                                  "update_alignment": alignment_summary(r, cfg.early_max_step, g.dim)}
        if len(rows_steps) >= cfg.rolling_window:
            cw = per_block_cw({n: grams[n] for n in block_names}, rows_steps, anchor, block_vb, window=cfg.rolling_window, stride=cfg.rolling_stride)
            for n, d in cw.items():
                pb["blocks"][n]["cw"] = d
        summary["per_block"] = pb

    # ---- switching directions
    sw_detail = None
    if cfg.switching and have_p:
        ok = np.isfinite(p_ood)
        ok[0] = ok[0] and anchor > 0
        idx_ok = np.nonzero(ok)[0]
        pk, tr = detect_extrema(p_ood[idx_ok], cfg.switch_prominence, cfg.switch_neighbourhood)
        sp = switch_pairs(st_arr[idx_ok], p_ood[idx_ok], pk, tr, cfg.eval_noise_sigma)
        sw: dict[str, Any] = {"peaks": [int(st_arr[idx_ok][i]) for i in pk], "troughs": [int(st_arr[idx_ok][i]) for i in tr],
                              "switch_pairs": sp, "prominence": cfg.switch_prominence, "neighbourhood": cfg.switch_neighbourhood,
                              "backbone": "global raw PC1, sign-fixed", **common}
        if sp:
            vb_raw, _ = fix_sign(gram, p_raw.v1, ai, T - 1)
            basis = p_raw.dirs.copy()
            basis[:, 0] = vb_raw
            sw_detail = switching_geometry(gram, [(d["peak"], d["trough"]) for d in sp], vb_raw, basis, cfg.switch_top_k, steps)
            sw["geometry"] = sw_detail
            for name, c in block_vb.items():
                gb = grams[name]
                sw.setdefault("per_block_backbone_cos", {})[name] = [
                    float(np.asarray(_unit(gb, d["peak"], d["trough"])) @ gb.G @ (c / gb.norm(c))) for d in sp]
        summary["switching"] = sw

    # ---- window geometry (SPEC §5.13) for explicit checkpoint windows of this run
    if cfg.window_sets:
        from backbone_lab.analysis.windows import window_geometry

        wins = []
        for w in cfg.window_sets:
            missing = [x for x in w if x not in steps]
            wins.append({"steps": list(w), "skipped": f"steps {missing} not analysed (check cadence/exclude_steps)"} if missing
                        else window_geometry(gram, w))
        summary["windows"] = wins

    # ---- reheating (W16)
    if cfg.source_run:
        from backbone_lab.analysis.reheating import reheating_projection

        summary["reheating"] = reheating_projection(cfg.source_run, traj_dir, cfg, progress=progress)

    # ---- optional D-dim backbone export
    if cfg.save_backbone:
        cols = reader.subset_columns(cfg.subset)
        D = gram.dim
        mm = np.lib.format.open_memmap(out_dir / f"backbone_{cfg.subset}.npy", mode="w+", dtype=np.float32, shape=(D,))
        reconstruct_directions(reader, gram, vb, columns=cols, chunk_bytes=cfg.chunk_mb << 20, out=mm[:, None])
        mm.flush()
        summary["backbone_file"] = str(out_dir / f"backbone_{cfg.subset}.npy")

    # ---- diagnostics hook
    if cfg.diagnostics:
        ctx = {"run_dir": run_dir, "out_dir": out_dir, "cfg": cfg, "reader": reader, "grams": grams, "steps": steps,
               "anchor_step": anchor, "backbone_coeffs": vb, "metrics": metrics, "summary": summary}
        summary["diagnostics"] = {}
        for name in cfg.diagnostics:
            summary["diagnostics"][name] = resolve_diagnostic(name)(ctx)

    # ---- the paper's Figs. 2/3 from diagnostics recorded during training (diagnostics callbacks)
    if cfg.figures and (run_dir / "diagnostics").is_dir():
        from backbone_lab.diagnostics.figures import plot_alignment, plot_fisher

        figs = {name: Path(p).name for name, p in
                (("fig2_alignment", plot_alignment(run_dir, out_dir / "fig2_alignment.png")),
                 ("fig3_fisher", plot_fisher(run_dir, out_dir / "fig3_fisher.png"))) if p is not None}
        summary["training_diagnostics"] = {"source": str(run_dir / "diagnostics"), "figures": figs}

    # ---- files
    _write_outputs(out_dir, summary, steps, dec, metrics, p_raw, p_rn, roll, phases, gram, grams, ua_rows)
    summary["elapsed_seconds"] = time.perf_counter() - t_start
    summary["gram_stream_seconds"] = gram.meta["stream_seconds"]
    if cfg.figures:
        from backbone_lab.analysis.figures import make_figures

        summary["figures"] = make_figures(out_dir, summary, steps, dec, metrics, p_raw, p_rn, roll, phases, gram, update_res=res_c)
    summary = _f(summary)
    with open(out_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    if cfg.report:
        from backbone_lab.analysis.report import write_report

        write_report(out_dir, summary)
    return summary


def _unit(g: DriftGram, a: int, b: int) -> np.ndarray:
    c = np.zeros(len(g.steps))
    c[g.index(a)] += 1
    c[g.index(b)] -= 1
    n = g.norm(c)
    return c / n if n > 0 else c


def _write_outputs(out_dir, summary, steps, dec, metrics, p_raw, p_rn, roll, phases, gram, grams, ua_rows) -> None:
    st = np.asarray(steps)
    extra_cols = ["p_ood", "p_in", "val_loss", "train_loss", "lr", "lambda"]
    ev = {c: align(metrics, st, c) for c in extra_cols}
    rows = []
    for i, s in enumerate(steps):
        rows.append([int(s), dec.a[i], dec.norm_r[i], dec.norm_delta[i], dec.backbone_frac[i], dec.a_dot[i], dec.r_dot[i]] + [float(ev[c][i]) for c in extra_cols])
    _write_csv(out_dir / "timeseries.csv", ["step", "a_t", "norm_r_t", "norm_delta_t", "backbone_frac", "a_dot", "r_dot"] + extra_cols, rows)
    n = max(len(p_raw.pca.sigma), len(p_rn.pca.sigma))
    sp = []
    for k in range(n):
        sp.append([k + 1, p_raw.pca.sigma[k], p_raw.pca.explained[k], p_rn.pca.sigma[k], p_rn.pca.explained[k]])
    _write_csv(out_dir / "spectrum.csv", ["k", "sigma_raw", "explained_raw", "sigma_rownorm", "explained_rownorm"], sp)
    if roll is not None:
        ae = roll.alignment_with(gram, phases.v_early) if phases is not None else np.full(len(roll.start), np.nan)
        al = roll.alignment_with(gram, phases.v_late) if phases is not None else np.full(len(roll.start), np.nan)
        rr = []
        for w in range(len(roll.start)):
            rr.append([int(roll.start[w]), int(roll.end[w]), float(roll.centre[w]), float(roll.pc1[w]),
                       float(roll.rho[w]) if w < len(roll.rho) else float("nan"), float(ae[w]), float(al[w])])
        _write_csv(out_dir / "rolling.csv", ["start", "end", "centre", "pc1", "rho_next", "A_E", "A_L"], rr)
    _write_csv(out_dir / "update_alignment.csv", ["subset", "variant", "step", "step_from", "step_to", "cos", "abs_cos"], ua_rows)
    np.savez(out_dir / "grams.npz", steps=np.asarray(steps), ref_step=gram.ref_step,
             **{f"G_{k}": v.G for k, v in grams.items()}, **{f"dim_{k}": v.dim for k, v in grams.items()})
