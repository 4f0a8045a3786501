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
    from backbone_lab.compare.claim_metrics import declare_numbers

    paths = [str(p) for p in paths]
    runs = discover_runs(paths)  # reads summaries only: cheap, and the claims may name their numbers
    if not runs:
        raise FileNotFoundError(f"no runs (folders with config.yaml or a DONE/FAILED marker) under {', '.join(paths)}")
    _probe(runs)
    for run in runs:  # numbers declared by the runs' own (user) stages are claim metrics too
        if run.ok and isinstance(run.summary.get("numbers"), dict):
            declare_numbers(run.summary["numbers"])
    claims = (shipped_claims() if paper_claims else []) + [c for f in claim_files for c in load_claims(f)]
    if out_dir is None:
        out_dir = default_out_dir(paths, runs)
    info = write_report(runs, Path(out_dir), paths, plots=plots, claims=claims, wandb_mode=wandb_mode)
    info["n_runs"] = len(runs)
    info["unreadable"] = {str(r.run_dir): r.marker.get("error", "") for r in runs if r.state == "unreadable"}
    return info


OUTPUT_ROOT_ENV = "BACKBONE_LAB_OUTPUT"  # = conf/paths/default.yaml: paths.output_root


def default_out_dir(paths: list[str], runs) -> "Path":
    """Where a comparison goes without `--out`: `<the one input>/compare`; for several inputs
    `<output root>/compare` — the configured output root (`$BACKBONE_LAB_OUTPUT`, else the absolute
    `paths.output_root` every run was written under), else the inputs' common parent folder.
    Never a folder relative to the current directory."""
    import os
    from pathlib import Path

    if len(paths) == 1:
        return Path(paths[0]) / "compare"
    if os.environ.get(OUTPUT_ROOT_ENV):
        return Path(os.environ[OUTPUT_ROOT_ENV]) / "compare"
    roots = {str(r.cfg("paths.output_root", "")) for r in runs}
    if len(roots) == 1 and Path(next(iter(roots))).is_absolute():
        return Path(next(iter(roots))) / "compare"
    return Path(os.path.commonpath([str(Path(p).resolve()) for p in paths])) / "compare"


def _probe(runs) -> None:
    """A run whose headline numbers cannot be computed becomes `unreadable` (one malformed run
    must not take the comparison of the others down; see `compare.malformed`)."""
    from backbone_lab.compare.malformed import reason_of
    from backbone_lab.compare.tables import headline

    for run in runs:
        if run.ok:
            try:
                headline(run)
            except Exception as err:  # noqa: BLE001 - whatever a hand-edited file breaks
                run.mark_unreadable(reason_of(err, "analysis"))
