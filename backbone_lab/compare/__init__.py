"""Cross-run comparison: the paper's tables recomputed from our runs, plus overlay plots.

    python -m backbone_lab.compare multirun_outputs/sgd_controls/<time>          # a sweep
    python -m backbone_lab.compare runs/a runs/b --out cmp/                       # chosen runs

Per run it reads `config.yaml` (the swept keys and paper-protocol matching come from it),
`eval_metrics.csv`, `analysis/summary.json`, `analysis/timeseries.csv`, `analysis/rolling.csv`
(and `analysis/grams.npz` or `trajectory/` for window geometry), and `DONE` / `FAILED`.
It writes `report.md`, one CSV per table and `overlay*.png` into `--out`
(default `<sweep dir>/compare/`).

Modules: `runs` (discovery and loading), `grouping` (swept keys, labels, seed groups),
`tables` (Table 4, Table 5, β2 §6.1, Table 6 with paper values), `plots`, `report`.
"""

from backbone_lab.compare.report import build_tables, write_report
from backbone_lab.compare.runs import Run, discover_runs, load_run

__all__ = ["Run", "build_tables", "compare", "discover_runs", "load_run", "write_report"]


def compare(paths, out_dir=None, plots: bool = True) -> dict:
    """Discover the runs under `paths`, write the report; returns {out_dir, tables, figures, ...}."""
    from pathlib import Path

    paths = [str(p) for p in paths]
    runs = discover_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no runs (folders with config.yaml or a DONE/FAILED marker) under {', '.join(paths)}")
    if out_dir is None:
        out_dir = Path(paths[0]) / "compare" if len(paths) == 1 else Path("multirun_outputs") / "compare"
    info = write_report(runs, Path(out_dir), paths, plots=plots)
    info["n_runs"] = len(runs)
    return info
