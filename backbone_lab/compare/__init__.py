"""Cross-run comparison: the paper's tables recomputed from our runs, plus overlay plots.

    python -m backbone_lab.compare multirun_outputs/sgd_controls/<time>          # a sweep
    python -m backbone_lab.compare runs/a runs/b --out cmp/                       # chosen runs

Per run it reads `config.yaml` (the swept keys and paper-protocol matching come from it),
`eval_metrics.csv`, `analysis/summary.json`, `analysis/timeseries.csv`, `analysis/rolling.csv`
(and `analysis/grams.npz` or `trajectory/` for window geometry), and `DONE` / `FAILED`.
It writes `report.md`, one CSV per table and `overlay*.png` into `--out`
(default `<sweep dir>/compare/`).

Every comparison starts with the paper's claims checked on the runs present (``claims.yaml``:
holds / does not hold / not testable here, and why), plus user claim files (``--claims FILE``).

Modules: `runs` (discovery and loading), `grouping` (swept keys, labels, seed groups),
`tables` (Table 4, Table 5, β2 §6.1, Table 6 with paper values), `seed_stats` (95 % t intervals
over seeds), `seed_groups` (groups.csv, execution differences), `claim_file` (the claim format),
`claim_metrics` (what a claim can measure), `claim_selection` (which runs, when testable),
`claims` (verdicts per seed: holds / fragile / does not hold), `plots`, `headline_figure`,
`group_figure`, `report`, `wandb_run` (the sweep-level W&B run).
"""

from backbone_lab.compare.report import build_tables, write_report
from backbone_lab.compare.runs import Run, discover_runs, load_run

__all__ = ["Run", "build_tables", "compare", "discover_runs", "load_run", "write_report"]


def compare(paths, out_dir=None, plots: bool = True, claim_files=(), paper_claims: bool = True,
            wandb_mode: str = "disabled") -> dict:
    """Discover the runs under `paths`, check the claims (the paper's unless `paper_claims=False`,
    plus every file of `claim_files`), write the report (and, unless `wandb_mode` is "disabled", a
    sweep-level W&B run: auto / online / offline); returns {out_dir, tables, figures, claims, ...}."""
    from pathlib import Path

    from backbone_lab.compare.claim_file import load_claims
    from backbone_lab.compare.claim_file import paper_claims as shipped_claims

    claims = (shipped_claims() if paper_claims else []) + [c for f in claim_files for c in load_claims(f)]
    paths = [str(p) for p in paths]
    runs = discover_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no runs (folders with config.yaml or a DONE/FAILED marker) under {', '.join(paths)}")
    if out_dir is None:
        out_dir = Path(paths[0]) / "compare" if len(paths) == 1 else Path("multirun_outputs") / "compare"
    info = write_report(runs, Path(out_dir), paths, plots=plots, claims=claims, wandb_mode=wandb_mode)
    info["n_runs"] = len(runs)
    return info
