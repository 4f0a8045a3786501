"""Write the comparison report: `report.md` + one CSV per table + overlay PNGs."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

from backbone_lab.compare import tables
from backbone_lab.compare.claim_file import Claim
from backbone_lab.compare.claims import check_claims, verdict_counts
from backbone_lab.compare.grouping import label_runs
from backbone_lab.compare.group_figure import group_figure
from backbone_lab.compare.headline_figure import headline_figure
from backbone_lab.compare.plots import overlay_figures
from backbone_lab.compare.runs import Run
from backbone_lab.compare.seed_groups import groups_table, with_seed_means
from backbone_lab.compare.seed_stats import INTERVAL_METHOD
from backbone_lab.durable import atomic_write_text

TABLE_TITLES = {
    "runs": ("Runs", "Every run: state and headline numbers (PC1 / k95 from the run's own analysis, "
                     "drift = ||theta(final) - theta(anchor)|| on the trunk). Alignment with the backbone: "
                     "`update_abs_cos` = mean |cos(u, v_b)| of the analysis' fixed-lag updates (global v_b); "
                     "`grad_abs_cos` / `update_abs_cos_recorded` = per-batch gradient / Delta-step update |cos| "
                     "recorded in training against the rolling v_b (callbacks=alignment), `update_over_grad` their "
                     "ratio (paper: 20-30x); `noise_floor` = sqrt(2/(pi D))."),
    "groups": ("Seed groups", "Runs that differ only in their seed (same config, schedule, λ schedule, anchor and "
                              f"analysis settings) form a group. `mean` over its seeds, `ci_low`/`ci_high`: {INTERVAL_METHOD}; "
                              "n = 1 has no interval (`note`: one seed). `null:<metric>` = the mean of the runs' null "
                              "baselines (random walk with the same increment norms). `note` also flags execution "
                              "details (execution.json) that differ within a group."),
    "sgd_controls": ("SGD controls (paper Table 4)", "PC1 / k95 / k99 / drift on the dense snapshot window "
                     "(paper: [600, 2000] every 50 steps, anchored at its first checkpoint)."),
    "matched_windows": ("Matched validation loss windows (paper Table 5)", "AdamW windows around the step whose val "
                        "loss matches SGD+momentum's final val loss, and SGD+momentum windows around AdamW's val there."),
    "beta2": ("beta2 sweep (paper §6.1)", "Mean |cos(u, v_b)| from the analysis' fixed-lag updates "
              "(update_lag); early = updates ending at <= early_max_step; early corr = corr(p_ood, ||r||) on the "
              "first window (0-2000 on paper runs)."),
    "reheating": ("Reheating (paper Table 6)", "first_ge_060 = first evaluation with p_ood >= 0.60 (empty: never); "
                  "max_abs_a_rel_change = max |a(t) - a_src(final)| / a_src(final) in the source backbone frame."),
}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "" if math.isnan(v) else str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def _columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def markdown_table(rows: list[dict], skip: tuple[str, ...] = ("run_dir",)) -> str:
    cols = [c for c in _columns(rows) if c not in skip]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] | None = None) -> None:
    """Rows as CSV (NaN / None as empty cells), written atomically (backbone_lab.durable)."""
    cols = list(columns) if columns else _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None or (isinstance(r.get(c), float) and math.isnan(r[c])) else r.get(c))
                    for c in cols})
    atomic_write_text(path, buf.getvalue())


def build_tables(runs: list[Run]) -> dict[str, list[dict]]:
    """All tables that apply to these runs (empty ones are dropped)."""
    out = {
        "runs": tables.runs_table(runs),
        "groups": groups_table(runs),
        "sgd_controls": tables.sgd_controls_table(runs) if any(tables.arm_of(r) in ("B", "C", "C'") for r in runs) else [],
        "matched_windows": tables.matched_windows_table(runs),
        "beta2": tables.beta2_table(runs) if len({tables.beta2_of(r) for r in runs if tables.beta2_of(r) is not None}) > 1 else [],
        "reheating": tables.reheating_table(runs),
    }
    return {k: v for k, v in out.items() if v}


GROUPS_CSV_COLUMNS = ("group", "metric", "n", "mean", "ci_low", "ci_high", "note")
CLAIM_COLUMNS = ("claim", "section", "verdict", "seeds", "ours", "expected", "effect", "null", "paper_band", "paper", "why")


def claims_section(rows: list[dict], counts: dict[str, int]) -> list[str]:
    """report.md lines of the claims check: counts, the tested claims, the untestable ones and why."""
    tested = [r for r in rows if r["verdict"] != "not testable here"]
    untested = [r for r in rows if r["verdict"] == "not testable here"]
    lines = ["## Claims of the paper: do they hold on these runs?", "",
             ", ".join(f"**{n}** {v}" for v, n in counts.items()) + ". Each claim is judged per seed inside each "
             "seed group (runs differing only in the seed): **holds** for every seed, **fragile** when only some "
             "seeds (`seeds`: k of n), **does not hold** when a group has no seed for which it holds. `ours` gives "
             f"each group's mean with its {INTERVAL_METHOD} and the per-seed values (one seed: no interval); "
             "`expected` the check; orderings pair seeds across the swept values and need the stated minimum "
             "effect (a flat or reversed trend fails; `effect`: mean per-seed change [95 % t interval], d_z = "
             "mean / sd); comparisons pair each run with its control of the same seed and protocol. Claims a "
             "random walk also passes are judged against each run's own null band (`null`: random walk with the "
             "same increment norms, from the analysis); `paper_band` is then the paper's absolute band, kept as "
             "a secondary verdict. `why` names the runs left out and why (diverged, did not learn, a missing "
             "null, ...). Claims and thresholds: `backbone_lab/compare/claims.yaml` (add your own with "
             "`--claims FILE`).", ""]
    if tested:
        shown = [c for c in CLAIM_COLUMNS if any(r.get(c) for r in tested) or c in ("claim", "verdict", "ours")]
        lines += [markdown_table([{k: r[k] for k in shown} for r in tested]), ""]
    if untested:
        lines += ["### Not testable on these runs", "",
                  markdown_table([{k: r[k] for k in ("claim", "section", "why", "ours", "paper_band", "paper")
                                   if k not in ("ours", "paper_band") or any(u.get(k) for u in untested)}
                                  for r in untested]), ""]
    lines += ["Statements:", ""]
    lines += [f"* `{r['claim']}` ({r['section']}, metric `{r['metric']}`): {r['statement']}"
              + (f" Needs a run that is {r['requires']}." if r.get("requires") else "") for r in rows]
    return lines + ["", "CSV: `claims.csv` (with the runs each verdict used)", ""]


def write_report(runs: list[Run], out_dir: Path, inputs: list[str], plots: bool = True,
                 claims: list[Claim] | None = None, wandb_mode: str = "disabled") -> dict:
    """Label the runs, check the claims, build the tables, write report.md / <table>.csv / PNGs;
    with `wandb_mode` auto / online / offline also a sweep-level W&B run (`wandb_run`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    swept = label_runs(runs)
    verdicts = check_claims(runs, claims) if claims else []
    claim_rows = [v.row() for v in verdicts]
    built = build_tables(runs)
    figures = ([f for f in [headline_figure(runs, out_dir), group_figure(runs, out_dir)] if f]
               + overlay_figures(runs, out_dir)) if plots else []
    lines = [f"# Comparison of {len(runs)} runs", "",
             f"Inputs: {', '.join(inputs)}  ",
             f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by `python -m backbone_lab.compare`.", "",
             "Swept keys (values that differ between the runs' resolved `config.yaml`): "
             + (", ".join(f"`{k}`" for k in swept) if swept else "none"), ""]
    if claim_rows:
        write_csv(out_dir / "claims.csv", claim_rows)
        lines += claims_section(claim_rows, verdict_counts(verdicts))
    for name, rows in built.items():
        title, note = TABLE_TITLES[name]
        write_csv(out_dir / f"{name}.csv", rows, GROUPS_CSV_COLUMNS if name == "groups" else None)
        shown = rows if name == "groups" else with_seed_means(rows, runs)
        if len(shown) > len(rows):
            note += (" Rows `<group>: mean of n seeds [95 % t]`: the mean over a seed group's runs and its "
                     f"{INTERVAL_METHOD} (report only; the CSV has one row per run).")
        lines += [f"## {title}", "", note, "", markdown_table(shown), "", f"CSV: `{name}.csv`", ""]
        if any("paper_note" in r or any(k.startswith("paper_") for k in r) for r in rows):
            lines += ["`paper_*` columns: the paper's values, shown only where the run's resolved config matches "
                      "the paper protocol for that row (model, data, optimizer, schedule, steps, seed); "
                      "`paper_note` lists settings that still differ (e.g. the paper's val loss included EOS padding, "
                      "SPEC W6; the reference's beta2 sweep ran p_probe 0.20).", ""]
    if "headline.png" in figures:
        lines += ["## Headline figure", "", "PC1 and k95 per run, the spectra overlaid, drift, gradient vs update "
                  "alignment (with the noise floor) and the best p_ood (with the chance level).", "",
                  "![headline](headline.png)", ""]
    if "groups.png" in figures:
        lines += ["## Seed groups figure", "", "Per seed group: the seeds (dots), their mean (bar) and the 95 % t "
                  "interval over the seeds (band; a group of one seed has none), with the null baseline's mean "
                  "(cross) where the analysis computed one.", "", "![groups](groups.png)", ""]
    if "overlay.png" in figures:
        lines += ["## Overlays", "", "a(t) and ||r(t)|| are measured along each run's own backbone (a different "
                  "direction per run); reheating a(t) along its source run's backbone.", "", "![overlay.png](overlay.png)", ""]
        lines += ["Per quantity: " + ", ".join(f"[{f}]({f})" for f in figures if f.startswith("overlay_")), ""]
    wandb_dir = None
    if wandb_mode != "disabled":
        from backbone_lab.compare.wandb_run import publish_compare

        wandb_dir = publish_compare(out_dir, runs, built, claim_rows, figures, inputs, mode=wandb_mode)
        if wandb_dir is not None:
            lines += ["## W&B", "", f"The tables and figures above are also a W&B run (job_type `compare`): "
                      f"`{wandb_dir}`" + (" (offline: `wandb sync` it to upload)" if "offline" in wandb_dir.name else ""), ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return {"out_dir": str(out_dir), "tables": {k: len(v) for k, v in built.items()}, "figures": figures,
            "swept_keys": swept, "claims": claim_rows, "wandb_run": str(wandb_dir) if wandb_dir else None}
