"""Write the comparison report: `report.md` + one CSV per table + overlay PNGs."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from backbone_lab.compare import tables
from backbone_lab.compare.claim_file import Claim
from backbone_lab.compare.claims import check_claims, verdict_counts
from backbone_lab.compare.grouping import label_runs
from backbone_lab.compare.headline_figure import headline_figure
from backbone_lab.compare.plots import overlay_figures
from backbone_lab.compare.runs import Run
from backbone_lab.durable import atomic_write_text, output_folder

TABLE_TITLES = {
    "runs": ("Runs", "Every run: state and headline numbers (PC1 / k95 from the run's own analysis, "
                     "drift = ||theta(final) - theta(anchor)|| on the trunk). Alignment with the backbone: "
                     "`update_abs_cos` = mean |cos(u, v_b)| of the analysis' fixed-lag updates (global v_b); "
                     "`grad_abs_cos` / `update_abs_cos_recorded` = per-batch gradient / Delta-step update |cos| "
                     "recorded in training against the rolling v_b (callbacks=alignment), `update_over_grad` their "
                     "ratio (paper: 20-30x); `noise_floor` = sqrt(2/(pi D))."),
    "groups": ("Seed groups", "Mean and sample std over runs that differ only in the seed."),
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


def write_csv(path: Path, rows: list[dict]) -> None:
    """`rows` as a CSV at `path`, through the atomic writer (a symlink there is replaced, not followed)."""
    import io

    cols = _columns(rows)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None or (isinstance(r.get(c), float) and math.isnan(r[c])) else r.get(c))
                    for c in cols})
    atomic_write_text(path, buf.getvalue())


def build_tables(runs: list[Run]) -> dict[str, list[dict]]:
    """All tables that apply to these runs (empty ones are dropped)."""
    out = {
        "runs": tables.runs_table(runs),
        "groups": tables.group_table(runs),
        "sgd_controls": tables.sgd_controls_table(runs) if any(tables.arm_of(r) in ("B", "C", "C'") for r in runs) else [],
        "matched_windows": tables.matched_windows_table(runs),
        "beta2": tables.beta2_table(runs) if len({tables.beta2_of(r) for r in runs if tables.beta2_of(r) is not None}) > 1 else [],
        "reheating": tables.reheating_table(runs),
    }
    return {k: v for k, v in out.items() if v}


CLAIM_COLUMNS = ("claim", "section", "verdict", "ours", "expected", "paper", "why")


def claims_section(rows: list[dict], counts: dict[str, int]) -> list[str]:
    """report.md lines of the claims check: counts, the tested claims, the untestable ones and why."""
    tested = [r for r in rows if r["verdict"] != "not testable here"]
    untested = [r for r in rows if r["verdict"] == "not testable here"]
    lines = ["## Claims of the paper: do they hold on these runs?", "",
             ", ".join(f"**{n}** {v}" for v, n in counts.items()) + ". `ours` lists each run's value (label: value), "
             "`expected` the check, `paper` the paper's numbers; `why` names runs left out and their reasons. Claims "
             "and thresholds: `backbone_lab/compare/claims.yaml` (add your own with `--claims FILE`).", ""]
    if tested:
        lines += [markdown_table([{k: r[k] for k in CLAIM_COLUMNS} for r in tested]), ""]
    if untested:
        lines += ["### Not testable on these runs", "",
                  markdown_table([{k: r[k] for k in ("claim", "section", "why", "paper")} for r in untested]), ""]
    lines += ["Statements:", ""]
    lines += [f"* `{r['claim']}` ({r['section']}, metric `{r['metric']}`): {r['statement']}" for r in rows]
    return lines + ["", "CSV: `claims.csv` (with the runs each verdict used)", ""]


def write_report(runs: list[Run], out_dir: Path, inputs: list[str], plots: bool = True,
                 claims: list[Claim] | None = None) -> dict:
    """Label the runs, check the claims, build the tables, write report.md / <table>.csv / PNGs."""
    out_dir = output_folder(out_dir, "compare output folder")
    swept = label_runs(runs)
    verdicts = check_claims(runs, claims) if claims else []
    claim_rows = [v.row() for v in verdicts]
    built = build_tables(runs)
    figures = ([f for f in [headline_figure(runs, out_dir)] if f] + overlay_figures(runs, out_dir)) if plots else []
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
        write_csv(out_dir / f"{name}.csv", rows)
        lines += [f"## {title}", "", note, "", markdown_table(rows), "", f"CSV: `{name}.csv`", ""]
        if any("paper_note" in r or any(k.startswith("paper_") for k in r) for r in rows):
            lines += ["`paper_*` columns: the paper's values, shown only where the run's resolved config matches "
                      "the paper protocol for that row (model, data, optimizer, schedule, steps, seed); "
                      "`paper_note` lists settings that still differ (e.g. the paper's val loss included EOS padding, "
                      "SPEC W6; the reference's beta2 sweep ran p_probe 0.20).", ""]
    if "headline.png" in figures:
        lines += ["## Headline figure", "", "PC1 and k95 per run, the spectra overlaid, drift, gradient vs update "
                  "alignment (with the noise floor) and the best p_ood (with the chance level).", "",
                  "![headline](headline.png)", ""]
    if "overlay.png" in figures:
        lines += ["## Overlays", "", "a(t) and ||r(t)|| are measured along each run's own backbone (a different "
                  "direction per run); reheating a(t) along its source run's backbone.", "", "![overlay.png](overlay.png)", ""]
        lines += ["Per quantity: " + ", ".join(f"[{f}]({f})" for f in figures if f.startswith("overlay_")), ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return {"out_dir": str(out_dir), "tables": {k: len(v) for k, v in built.items()}, "figures": figures,
            "swept_keys": swept, "claims": claim_rows}
