"""The paper's tables recomputed from our runs, with the paper's value beside ours where the
run's resolved config matches the paper protocol (SPEC §3-4, §5.13, §6.1).

Every table is a list of row dicts (column -> value); `report.py` renders them as markdown and
CSV. Paper values come from `paper_values.json` (`paper_reference`). A paper value is shown only
when the run's config matches the *required* settings of that row (model, data, optimizer,
schedule, steps, seed); *noted* settings that differ (e.g. the β2 sweep's p_probe 0.20, padding
in the paper's val loss) are listed in the `paper_note` column. A run's analysis numbers come
from its `Summary` (`backbone_lab.analysis.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from backbone_lab.compare.grouping import optimizer_name
from backbone_lab.compare.paper_reference import (
    BETA2, BETA2_NOTED, BETA2_PROTOCOL, PADDING_NOTE, PAPER_4K, REHEAT, REHEAT_PROTOCOL, SGD_ARMS, TABLE4, TABLE5, PaperRef,
)
from backbone_lab.compare.runs import Run, eval_best, eval_last
from backbone_lab.run_dir import RunDir

NAN = math.nan


def _nan(x: Any) -> float:
    """None (absent in summary.json) -> NaN, for numeric table cells."""
    return NAN if x is None else x


# ----------------------------------------------------------------------------- helpers
def arm_of(run: Run) -> str | None:
    """SGD-control arm (A, B, C, C') by optimizer family, independent of the exact values."""
    name = optimizer_name(run.config)
    return {"AdamW": "A", "SGD": "B", "SGD+momentum": "C", "SGDW-Nesterov": "C'"}.get(name)


def _paper(ref: PaperRef | None, run: Run, keys: Sequence[str]) -> tuple[dict, str]:
    if ref is None:
        return {}, ""
    ok, notes = ref.match(run)
    if not ok:
        return {}, ""
    return {f"paper_{k}": ref.values.get(k) for k in keys}, "; ".join(notes)


def headline(run: Run) -> dict[str, Any]:
    """Numbers of one run used by several tables."""
    s = run.summary
    best, best_step = eval_best(run, "p_ood")
    return {
        "final_step": run.eval.get("step", [NAN])[-1] if run.eval.get("step") else NAN,
        "final_val_loss": eval_last(run, "val_loss"),
        "final_p_ood": eval_last(run, "p_ood"),
        "best_p_ood": best,
        "best_p_ood_step": best_step,
        "pc1_rownorm": _nan(s.pc1_rownorm_pct),
        "pc1_raw": _nan(s.pc1_raw_pct),
        "k95_rownorm": _nan(s.k95_rownorm),
        "k95_raw": _nan(s.k95_raw),
        "drift": _nan(s.drift_final),
        "backbone_frac_mean": _nan(s.backbone_frac_mean),
        "rho_mean": _nan(s.rho_mean),
        "update_abs_cos": _nan(s.update_mean_abs_cos),
        "grad_abs_cos": _nan(s.grad_mean_abs_cos),
        "update_abs_cos_recorded": _nan(s.update_abs_cos_recorded),
        "update_over_grad": _nan(s.update_over_grad),
        "noise_floor": _nan(s.noise_floor),
        "anchor_step": _nan(s.anchor_step),
        "snapshots_used": _nan(s.snapshots_used),
        "beyond_null": run.get("beyond_null"),  # PC1 dominance outside the null band (None: no null in the analysis)
        "analysis_flags": ",".join(s.flag_codes),
    }


def runs_table(runs: list[Run]) -> list[dict]:
    """One row per run: state and headline numbers (every comparison starts here)."""
    rows = []
    for r in runs:
        row = {"run": r.label or r.name, "state": r.state}
        if r.state == "diverged":
            row["state"] = f"diverged@{r.marker.get('diverged_at_step')}"
        if r.state == "failed":
            row["error"] = str(r.marker.get("error", ""))[:120]
        row.update(headline(r) if r.ok else {})
        row["train_seconds"] = r.marker.get("train_seconds", NAN)
        row["run_dir"] = str(r.run_dir)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- window geometry
def run_gram(run: Run, steps: Sequence[int]):
    """DriftGram over `steps` (trunk): from analysis/grams.npz when it has them, else streamed."""
    from backbone_lab.analysis.gram import DriftGram, stream_grams
    from backbone_lab.analysis.run_analysis import GRAMS_NAME
    from backbone_lab.trajectory.store import TrajectoryReader

    steps = sorted(set(int(s) for s in steps))
    npz = RunDir(run.run_dir).analysis / GRAMS_NAME
    if npz.exists():
        with np.load(npz) as z:
            have = [int(s) for s in z["steps"]]
            if "G_trunk" in z and set(steps) <= set(have):
                return DriftGram(steps=np.asarray(have), G=z["G_trunk"], ref_step=int(z["ref_step"]),
                                 subset="trunk", dim=int(z["dim_trunk"]))
    reader = TrajectoryReader(RunDir(run.run_dir).trajectory)
    return stream_grams(reader, {"trunk": reader.subset_columns("trunk")}, steps=steps, ref=steps[0])["trunk"]


def stored_steps(run: Run) -> list[int]:
    from backbone_lab.trajectory.store import TrajectoryReader

    try:
        return list(TrajectoryReader(RunDir(run.run_dir).trajectory).steps)
    except Exception:  # noqa: BLE001 - no trajectory: no window geometry
        return []


def dense_window(run: Run, stored: Sequence[int]) -> list[int]:
    """The run's analysis window for Table 4: its first dense snapshot range (SPEC §4.1: [600, 2000]
    every 50), else every stored step after step 1."""
    dense = run.cfg("snapshots.dense") or []
    have = set(stored)
    if dense:
        lo, hi, every = (int(x) for x in dense[0])
        win = [s for s in range(lo, hi + 1, every) if s in have]
        if len(win) >= 3:
            return win
    return [s for s in stored if s >= 1]


def window_row(run: Run, steps: Sequence[int], gram=None) -> dict:
    from backbone_lab.analysis.windows import window_geometry

    gram = gram if gram is not None else run_gram(run, steps)
    return window_geometry(gram, list(steps))


# ----------------------------------------------------------------------------- paper tables
def sgd_controls_table(runs: list[Run]) -> list[dict]:
    """Table 4: final val, best p_ood, PC1 % / k95 / drift on the dense window, per arm."""
    rows = []
    for r in runs:
        arm = arm_of(r)
        if arm is None or not r.ok:
            continue
        h = headline(r)
        stored = stored_steps(r)
        row: dict[str, Any] = {"arm": arm, "run": r.label or r.name, "steps": h["final_step"],
                               "final_val_loss": h["final_val_loss"], "best_p_ood": h["best_p_ood"]}
        win = dense_window(r, stored)
        if len(win) >= 2:
            try:
                g = window_row(r, win)
                row.update(window=f"[{win[0]}, {win[-1]}] ({len(win)} ckpts)", pc1_pct=g["pc1_pct"], k95=g["k95"],
                           k99=g["k99"], drift=g["drift"])
            except Exception as err:  # noqa: BLE001
                row["window"] = f"unavailable: {err}"
        ref = PaperRef(TABLE4[arm], {**PAPER_4K, **SGD_ARMS[arm]}, PADDING_NOTE)
        paper, note = _paper(ref, r, ("final_val_loss", "best_p_ood", "pc1_pct", "k95", "drift"))
        if paper:
            row.update(paper, paper_note=note)
        rows.append(row)
    return sorted(rows, key=lambda x: ["A", "B", "C", "C'"].index(x["arm"]))


def _same_setup(a: Run, b: Run) -> bool:
    """Two runs of one matched-loss comparison: the same model, data and number of steps."""
    return all(a.cfg(k) == b.cfg(k) for k in ("model.name", "data.source", "train.max_steps"))


def matched_pairs(runs: list[Run]) -> tuple[list[tuple[Run, Run]], list[tuple[Run, str]]]:
    """Every AdamW (arm A) and SGD+momentum (arm C) run with its partner of the other arm — the
    same seed when there is one, else the first run of the same model, data and steps — and the
    runs left without a partner, with the reason. Reheating runs are not arms."""
    arms = {"A": [], "C": []}
    dropped: list[tuple[Run, str]] = []
    for r in runs:
        arm = arm_of(r)
        if arm not in arms or r.cfg("init_from"):
            continue
        if not r.ok:
            dropped.append((r, f"{r.state} run: no matched-loss window"))
            continue
        arms[arm].append(r)
    pairs = []
    for arm, other, other_name in (("A", "C", "SGD+momentum"), ("C", "A", "AdamW")):
        for r in arms[arm]:
            peers = [o for o in arms[other] if _same_setup(r, o)]
            if not peers:
                dropped.append((r, f"no finished {other_name} run with the same model, data and steps to match its loss"))
                continue
            same_seed = [o for o in peers if o.cfg("seed") == r.cfg("seed")]
            pairs.append((r, (same_seed or peers)[0]))
    return pairs, dropped


def _matched_arm_rows(arm: str, run: Run, tgt: float) -> tuple[int | None, list[dict]]:
    """(matched step, rows) of one run: its windows around the eval step whose val loss is closest to `tgt`."""
    from backbone_lab.analysis.windows import matched_step

    stored = stored_steps(run)
    have = set(stored)
    ev_steps = [int(s) for s in run.eval.get("step", [])]
    val = run.eval.get("val_loss", [])
    e = int(run.cfg("train.eval_every") or 1)
    cand = [s for s in ev_steps if s in have]
    if not cand:
        return None, []
    centre_ok = [s for s in cand if s - 2 * e in have and s + 2 * e in have] or cand
    m = matched_step(ev_steps, val, tgt, candidates=centre_ok)
    windows: list[tuple[str, list[int]]] = []
    for label, st in (("matched ±1 eval", [m - e, m, m + e]), ("matched ±2 evals", [m - 2 * e + k * e for k in range(5)])):
        if all(s in have for s in st):
            windows.append((label, st))
    if arm == "A":
        start = [s for s in cand if 1 <= s <= m]
        if len(start) >= 2:
            windows.append(("start .. matched", start))
    windows.append(("dense window", dense_window(run, stored)))
    ref_ok = PaperRef({}, {**PAPER_4K, **SGD_ARMS[arm]}).match(run)[0]
    if ref_ok:
        windows += [("paper window", list(st)) for (arm_k, st) in TABLE5 if arm_k == arm and all(s in have for s in st)]
    seen: set[tuple[int, ...]] = set()
    todo = [(lab, st) for lab, st in windows if len(st) >= 2 and not (tuple(st) in seen or seen.add(tuple(st)))]
    if not todo:
        return m, []
    gram = run_gram(run, sorted({s for _, st in todo for s in st}))
    vmap = dict(zip(ev_steps, val))
    rows = []
    for label, st in todo:
        g = window_row(run, st, gram)
        row = {"arm": arm, "run": run.label or run.name, "window": label,
               "steps": f"[{st[0]}..{st[-1]}] ({len(st)})" if len(st) > 5 else str(st),
               "matched_step": m, "target_val_loss": tgt, "val_loss_at_end": vmap.get(st[-1], NAN),
               "pc1_pct": g["pc1_pct"], "k95": g["k95"], "k99": g["k99"], "drift": g["drift"],
               "stability_mean": g.get("stability_mean", NAN)}
        paper = TABLE5.get((arm, tuple(st)))
        if paper and ref_ok:
            row.update({f"paper_{k}": paper.get(k) for k in ("pc1_pct", "k95", "k99", "drift")})
        rows.append(row)
    return m, rows


def matched_windows_table(runs: list[Run]) -> list[dict]:
    """Table 5: window geometry around matched validation losses (AdamW vs SGD+momentum), for
    every AdamW and SGD+momentum run (`matched_pairs`: partners of the same seed when possible).

    Matched step m_A: the AdamW eval step whose val loss is closest to its partner SGD+momentum's
    final val loss; m_C: the SGD+momentum step whose val loss is closest to its AdamW partner's at
    m_A. Windows: [m-e, m, m+e] and [m-2e .. m+2e] (e = eval cadence), the start window [1 .. m]
    for AdamW, the dense window, and every paper window whose steps the run stored (paper runs).
    """
    pairs, _ = matched_pairs(runs)
    rows: list[dict] = []
    matched_a: dict[int, int | None] = {}
    for run, partner in pairs:
        if arm_of(run) == "A":
            m, arm_rows = _matched_arm_rows("A", run, eval_last(partner, "val_loss"))
            matched_a[id(run)] = m
            rows += arm_rows
    for run, partner in pairs:
        if arm_of(run) == "C":
            if id(partner) not in matched_a:  # its AdamW partner is paired with another SGD+momentum run
                matched_a[id(partner)] = _matched_arm_rows("A", partner, eval_last(run, "val_loss"))[0]
            va = dict(zip((int(s) for s in partner.eval.get("step", [])), partner.eval.get("val_loss", [])))
            tgt = va.get(matched_a[id(partner)] if matched_a[id(partner)] is not None else -1, eval_last(partner, "val_loss"))
            rows += _matched_arm_rows("C", run, tgt)[1]
    return rows


def beta2_of(run: Run) -> float | None:
    betas = run.cfg("optimizer.betas")
    if isinstance(betas, (list, tuple)) and len(betas) == 2 and "Adam" in str(run.cfg("optimizer._target_")):
        return float(betas[1])
    return None


def early_correlation(run: Run) -> float:
    """corr(p_ood, ||r||) of the window (0, early_max_step], else of the first window from 0."""
    s = run.summary
    windows = s.correlation_windows
    early = int(s.config.get("early_max_step", 2000) or 2000)
    for key in (f"0-{early}",) + tuple(k for k in windows if k.startswith("0-")):
        if key in windows:
            return _nan(s.correlation_r(key))
    return NAN


def beta2_table(runs: list[Run]) -> list[dict]:
    """§6.1: PC1 row-norm/raw, drift, best p_ood, mean |cos(u, v_b)| (all / early), early corr."""
    rows = []
    for r in runs:
        b2 = beta2_of(r)
        if b2 is None or not r.ok:
            continue
        h, s = headline(r), r.summary
        row: dict[str, Any] = {
            "beta2": b2, "run": r.label or r.name, "state": r.state,
            "pc1_rownorm": h["pc1_rownorm"], "pc1_raw": h["pc1_raw"], "drift": h["drift"],
            "best_p_ood": h["best_p_ood"], "mean_abs_cos": _nan(s.update_mean_abs_cos),
            "early_abs_cos": _nan(s.update_mean_abs_cos_early), "early_corr": early_correlation(r),
            "update_lag": _nan(s.update_lag),
        }
        paper_vals = next((v for k, v in BETA2.items() if math.isclose(k, b2, abs_tol=1e-9)), None)
        if paper_vals is not None:
            ref = PaperRef(paper_vals, BETA2_PROTOCOL, BETA2_NOTED)
            paper, note = _paper(ref, r, tuple(paper_vals))
            if paper:
                row.update(paper, paper_note=note)
        rows.append(row)
    return sorted(rows, key=lambda x: -x["beta2"])


def reheating_table(runs: list[Run]) -> list[dict]:
    """Table 6: peak p_ood, its step, first step with p_ood >= 0.60, final p_ood; a(t) change."""
    from omegaconf import OmegaConf

    rows = []
    for r in runs:
        src = r.cfg("init_from")
        if not src or not r.ok:
            continue
        steps = [int(s) for s in r.eval.get("step", [])]
        p = r.eval.get("p_ood", [])
        best, best_step = eval_best(r, "p_ood")
        first = next((s for s, v in zip(steps, p) if math.isfinite(v) and v >= 0.60), None)
        lr = float(r.cfg("optimizer.lr", NAN))
        row: dict[str, Any] = {
            "lr": lr, "run": r.label or r.name, "source": str(src), "start_p_ood": p[0] if p else NAN,
            "peak_p_ood": best, "peak_step": best_step, "first_ge_060": first, "final_p_ood": p[-1] if p else NAN,
            "max_abs_a_rel_change": _nan(r.summary.reheat_max_abs_a_rel_change),
            "source_pc1_pct": _nan(r.summary.reheat_source_pc1_pct),
        }
        paper_vals = next((v for k, v in REHEAT.items() if math.isclose(k, lr, rel_tol=1e-6)), None)
        if paper_vals is not None:
            src_ok = False
            try:
                sc = OmegaConf.to_container(OmegaConf.load(RunDir(src).config))
                src_ok = sc.get("model", {}).get("name") == "paper" and sc.get("train", {}).get("max_steps") == 10000
            except Exception:  # noqa: BLE001 - unreadable source config: no paper match
                pass
            if src_ok:
                paper, note = _paper(PaperRef(paper_vals, REHEAT_PROTOCOL, {}), r, tuple(paper_vals))
                if paper:
                    row.update(paper, paper_note=note)
        rows.append(row)
    return sorted(rows, key=lambda x: -x["lr"] if math.isfinite(x["lr"]) else 0)
