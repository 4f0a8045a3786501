"""The paper's tables recomputed from our runs, with the paper's value beside ours where the
run's resolved config matches the paper protocol (SPEC §3-4, §5.13, §6.1).

Every table is a list of row dicts (column -> value); `report.py` renders them as markdown and
CSV. Paper values come from SPEC (recovered from the paper / the reference's committed outputs).
A paper value is shown only when the run's config matches the *required* settings of that row
(model, data, optimizer, schedule, steps, seed); *noted* settings that differ (e.g. the β2
sweep's p_probe 0.20, padding in the paper's val loss) are listed in the `paper_note` column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backbone_lab.compare.grouping import optimizer_name
from backbone_lab.compare.runs import Run, eval_best, eval_last

NAN = math.nan


# ----------------------------------------------------------------------------- paper protocol
@dataclass
class PaperRef:
    """Paper values of one row, valid for runs whose config has the `required` values."""

    values: dict[str, Any]
    required: dict[str, Any]
    noted: dict[str, Any] = field(default_factory=dict)

    def match(self, run: Run) -> tuple[bool, list[str]]:
        for key, want in self.required.items():
            if not _same(run.cfg(key), want):
                return False, [f"{key}={run.cfg(key)!r} (paper {want!r})"]
        notes = [f"paper {k}={v!r}" for k, v in self.noted.items() if not _same(run.cfg(k), v)]
        return True, notes


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, (list, tuple)):
        return isinstance(have, (list, tuple)) and len(have) == len(want) and all(_same(h, w) for h, w in zip(have, want))
    if isinstance(want, float) or isinstance(have, float):
        try:
            return math.isclose(float(have), float(want), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return have == want


PAPER_MAIN = {"model.preset": "paper", "data.source": "tinystories", "seed": 42, "data.micro_batch_size": 64,
              "train.accumulate": 2, "train.grad_clip": 1.0, "schedule.floor": 0.1}
PAPER_4K = {**PAPER_MAIN, "train.max_steps": 4000, "schedule.warmup": 1500, "schedule.total": 4000,
            "train.eval_every": 200}
PADDING_NOTE = {"data.mask_padding": False}  # the paper's val loss included EOS padding (W6)

ADAMW_A = {"optimizer._target_": "torch.optim.AdamW", "optimizer.lr": 1e-3, "optimizer.betas": [0.9, 0.95],
           "optimizer.weight_decay": 0.5}
SGD_ARMS: dict[str, dict[str, Any]] = {
    "A": ADAMW_A,
    "B": {"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 1e-3, "optimizer.momentum": 0.0,
          "optimizer.weight_decay": 0.5},
    "C": {"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 1e-2, "optimizer.momentum": 0.9,
          "optimizer.weight_decay": 0.05},
    "C'": {"optimizer._target_": "backbone_lab.optim.SGDW", "optimizer.lr": 1e-2, "optimizer.momentum": 0.9,
           "optimizer.nesterov": True, "optimizer.weight_decay": 0.5},
}
TABLE4 = {  # SPEC §4.1 headline: final val, best p_ood, PC1 % and k95 on [600, 2000], drift
    "A": {"final_val_loss": 1.59, "best_p_ood": 0.433, "pc1_pct": 61.5, "k95": 9, "drift": 113.7},
    "B": {"final_val_loss": 8.12, "best_p_ood": 0.000, "pc1_pct": 100.0, "k95": 1, "drift": 40.2},
    "C": {"final_val_loss": 5.10, "best_p_ood": 0.015, "pc1_pct": 100.0, "k95": 1, "drift": 54.2},
    "C'": {"final_val_loss": 5.25, "best_p_ood": 0.013},
}
DENSE_600_2000 = tuple(range(600, 2001, 50))
TABLE5 = {  # SPEC §5.13 (arm, window steps) -> pc1 %, k95, k99, drift
    ("A", (1, 200, 400)): {"pc1_pct": 77.4, "k95": 2, "k99": 2},
    ("A", (1, 200, 400, 600)): {"pc1_pct": 69.2, "k95": 3, "k99": 3, "drift": 24.9},
    ("A", (200, 400, 600)): {"pc1_pct": 81.9, "k95": 2, "k99": 2},
    ("A", (200, 400, 600, *range(650, 1001, 50))): {"pc1_pct": 77.8, "k95": 4, "k99": 8, "drift": 50.7},
    ("A", DENSE_600_2000): {"pc1_pct": 61.5, "k95": 9, "k99": 19, "drift": 113.7},
    ("C", (2000, 2200, 2400)): {"pc1_pct": 98.1, "k95": 1, "k99": 2, "drift": 0.26},
    ("C", (1800, 2000, 2200, 2400, 2600)): {"pc1_pct": 97.7, "k95": 1, "k99": 2, "drift": 0.60},
    ("C", DENSE_600_2000): {"pc1_pct": 100.0, "k95": 1, "k99": 1, "drift": 54.2},
}
BETA2 = {  # SPEC §4.2 / paper §6.1 (reference beta2_backbone_summary.csv)
    0.99: {"pc1_rownorm": 68.75, "pc1_raw": 83.15, "drift": 120.0, "best_p_ood": 0.951, "mean_abs_cos": 0.243, "early_abs_cos": 0.368, "early_corr": 0.86},
    0.95: {"pc1_rownorm": 68.34, "pc1_raw": 82.50, "drift": 123.1, "best_p_ood": 0.939, "mean_abs_cos": 0.244, "early_abs_cos": 0.363, "early_corr": 0.85},
    0.90: {"pc1_rownorm": 66.66, "pc1_raw": 80.83, "drift": 128.0, "best_p_ood": 0.814, "mean_abs_cos": 0.234, "early_abs_cos": 0.343, "early_corr": 0.40},
    0.80: {"pc1_rownorm": 63.85, "pc1_raw": 78.98, "drift": 141.3, "best_p_ood": 0.682, "mean_abs_cos": 0.227, "early_abs_cos": 0.328, "early_corr": 0.39},
    0.0: {"pc1_rownorm": 52.48, "pc1_raw": 81.27, "drift": 161931.0, "best_p_ood": 0.005, "mean_abs_cos": 0.238, "early_abs_cos": 0.269, "early_corr": -0.57},
}
REHEAT = {  # SPEC §4.3 / Table 6, seed 42 from the 10k run: peak, step, first >= 0.60, final
    1e-3: {"peak_p_ood": 0.705, "peak_step": 900, "first_ge_060": 600, "final_p_ood": 0.221},
    6e-4: {"peak_p_ood": 0.782, "peak_step": 1000, "first_ge_060": 700, "final_p_ood": 0.279},
    3e-4: {"peak_p_ood": 0.578, "peak_step": 1500, "first_ge_060": None, "final_p_ood": 0.421},
}


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
    best, best_step = eval_best(run, "p_ood")
    return {
        "final_step": run.eval.get("step", [NAN])[-1] if run.eval.get("step") else NAN,
        "final_val_loss": eval_last(run, "val_loss"),
        "final_p_ood": eval_last(run, "p_ood"),
        "best_p_ood": best,
        "best_p_ood_step": best_step,
        "pc1_rownorm": run.get("pca.rownorm.pc1_pct", NAN),
        "pc1_raw": run.get("pca.raw.pc1_pct", NAN),
        "k95_rownorm": run.get("pca.rownorm.k95", NAN),
        "k95_raw": run.get("pca.raw.k95", NAN),
        "drift": run.get("decomposition.norm_delta_final", NAN),
        "backbone_frac_mean": run.get("decomposition.backbone_frac_mean", NAN),
        "rho_mean": run.get("rolling.rho_mean", NAN),
        "anchor_step": run.get("anchor_step", NAN),
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


def group_table(runs: list[Run]) -> list[dict]:
    """Mean ± std over runs sharing every swept value except the seed (only groups of >= 2)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.ok:
            groups.setdefault(r.group, []).append(r)
    rows = []
    for g, members in groups.items():
        if len(members) < 2:
            continue
        row: dict[str, Any] = {"group": g, "n_runs": len(members), "seeds": ",".join(str(m.cfg("seed")) for m in members)}
        heads = [headline(m) for m in members]
        for key in ("final_val_loss", "best_p_ood", "pc1_rownorm", "pc1_raw", "drift", "backbone_frac_mean", "rho_mean"):
            vals = np.array([h[key] for h in heads], dtype=float)
            vals = vals[np.isfinite(vals)]
            row[f"{key}_mean"] = float(vals.mean()) if len(vals) else NAN
            row[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else NAN
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- window geometry
def run_gram(run: Run, steps: Sequence[int]):
    """DriftGram over `steps` (trunk): from analysis/grams.npz when it has them, else streamed."""
    from backbone_lab.analysis.gram import DriftGram, stream_grams
    from backbone_lab.trajectory.store import TrajectoryReader

    steps = sorted(set(int(s) for s in steps))
    npz = run.run_dir / "analysis" / "grams.npz"
    if npz.exists():
        with np.load(npz) as z:
            have = [int(s) for s in z["steps"]]
            if "G_trunk" in z and set(steps) <= set(have):
                return DriftGram(steps=np.asarray(have), G=z["G_trunk"], ref_step=int(z["ref_step"]),
                                 subset="trunk", dim=int(z["dim_trunk"]))
    reader = TrajectoryReader(run.run_dir / "trajectory")
    return stream_grams(reader, {"trunk": reader.subset_columns("trunk")}, steps=steps, ref=steps[0])["trunk"]


def stored_steps(run: Run) -> list[int]:
    from backbone_lab.trajectory.store import TrajectoryReader

    try:
        return list(TrajectoryReader(run.run_dir / "trajectory").steps)
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


def matched_windows_table(runs: list[Run]) -> list[dict]:
    """Table 5: window geometry around matched validation losses (AdamW vs SGD+momentum).

    Matched step m_A: the AdamW eval step whose val loss is closest to SGD+momentum's final val
    loss; m_C: the SGD+momentum step whose val loss is closest to AdamW's at m_A. Windows:
    [m-e, m, m+e] and [m-2e .. m+2e] (e = eval cadence), the start window [1 .. m] for AdamW,
    the dense window, and every paper window whose steps the run stored (paper runs).
    """
    from backbone_lab.analysis.windows import matched_step

    by_arm = {arm_of(r): r for r in runs if r.ok and arm_of(r) in ("A", "C")}
    if "A" not in by_arm or "C" not in by_arm:
        return []
    a, c = by_arm["A"], by_arm["C"]
    target = eval_last(c, "val_loss")
    rows: list[dict] = []
    matched: dict[str, int] = {}
    for arm, run, tgt in (("A", a, target), ("C", c, None)):
        stored = stored_steps(run)
        have = set(stored)
        ev_steps = [int(s) for s in run.eval.get("step", [])]
        val = run.eval.get("val_loss", [])
        e = int(run.cfg("train.eval_every") or 1)
        if tgt is None:  # SGD+momentum: match AdamW's val at its matched step
            va = dict(zip((int(s) for s in a.eval.get("step", [])), a.eval.get("val_loss", [])))
            tgt = va.get(matched.get("A", -1), target)
        cand = [s for s in ev_steps if s in have]
        if not cand:
            continue
        centre_ok = [s for s in cand if s - 2 * e in have and s + 2 * e in have] or cand
        m = matched_step(ev_steps, val, tgt, candidates=centre_ok)
        matched[arm] = m
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
            continue
        gram = run_gram(run, sorted({s for _, st in todo for s in st}))
        vmap = dict(zip(ev_steps, val))
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
    return rows


def _beta2(run: Run) -> float | None:
    betas = run.cfg("optimizer.betas")
    if isinstance(betas, (list, tuple)) and len(betas) == 2 and "Adam" in str(run.cfg("optimizer._target_")):
        return float(betas[1])
    return None


def _early_corr(run: Run) -> float:
    by = run.get("correlations.by_window", {}) or {}
    early = int(run.get("config.early_max_step", 2000) or 2000)
    for key in (f"0-{early}",) + tuple(k for k in by if k.startswith("0-")):
        if key in by and isinstance(by[key], dict):
            r = by[key].get("r")
            return NAN if r is None else float(r)
    return NAN


def beta2_table(runs: list[Run]) -> list[dict]:
    """§6.1: PC1 row-norm/raw, drift, best p_ood, mean |cos(u, v_b)| (all / early), early corr."""
    rows = []
    for r in runs:
        b2 = _beta2(r)
        if b2 is None or not r.ok:
            continue
        h = headline(r)
        ua = r.get("update_alignment.fixed_lag") or r.get("update_alignment.consecutive") or {}
        row: dict[str, Any] = {
            "beta2": b2, "run": r.label or r.name, "state": r.state,
            "pc1_rownorm": h["pc1_rownorm"], "pc1_raw": h["pc1_raw"], "drift": h["drift"],
            "best_p_ood": h["best_p_ood"], "mean_abs_cos": ua.get("mean_abs_cos", NAN),
            "early_abs_cos": ua.get("mean_abs_cos_early", NAN), "early_corr": _early_corr(r),
            "update_lag": ua.get("lag", NAN),
        }
        paper_vals = next((v for k, v in BETA2.items() if math.isclose(k, b2, abs_tol=1e-9)), None)
        if paper_vals is not None:
            req = {**PAPER_4K, "optimizer._target_": "torch.optim.AdamW", "optimizer.lr": 1e-3,
                   "optimizer.weight_decay": 0.5, "analysis.anchor_step": 1}
            ref = PaperRef(paper_vals, req, {"data.p_probe": 0.2, **PADDING_NOTE})
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
            "max_abs_a_rel_change": r.get("reheating.max_abs_a_rel_change", NAN),
            "source_pc1_pct": r.get("reheating.source_pc1_pct", NAN),
        }
        paper_vals = next((v for k, v in REHEAT.items() if math.isclose(k, lr, rel_tol=1e-6)), None)
        if paper_vals is not None:
            src_ok = False
            try:
                sc = OmegaConf.to_container(OmegaConf.load(Path(src) / "config.yaml"))
                src_ok = sc.get("model", {}).get("preset") == "paper" and sc.get("train", {}).get("max_steps") == 10000
            except Exception:  # noqa: BLE001 - unreadable source config: no paper match
                pass
            req = {**PAPER_MAIN, "train.max_steps": 2000, "schedule.warmup": 200, "optimizer._target_": "torch.optim.AdamW",
                   "objective.lambda_schedule": [[0, 4.0]]}
            if src_ok:
                paper, note = _paper(PaperRef(paper_vals, req, {}), r, tuple(paper_vals))
                if paper:
                    row.update(paper, paper_note=note)
        rows.append(row)
    return sorted(rows, key=lambda x: -x["lr"] if math.isfinite(x["lr"]) else 0)
