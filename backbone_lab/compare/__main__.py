"""`python -m backbone_lab.compare <sweep dir | run dirs ...> [--out DIR] [--no-plots] [--claims FILE ...] [--no-wandb]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backbone_lab.compare",
        description="Compare runs: the paper's tables recomputed from our runs (markdown + CSV) and overlay plots (PNG).",
    )
    parser.add_argument("paths", nargs="+", help="sweep folders (multirun_outputs/<experiment>/<time>), "
                                                 "experiment folders, or run folders")
    parser.add_argument("--out", default=None, help="output folder (default: <the one input>/compare, "
                                                    "or multirun_outputs/compare for several inputs)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--claims", action="append", default=[], metavar="FILE",
                        help="a claim file (format: backbone_lab/compare/claim_file.py) checked after the paper's "
                             "claims; repeatable")
    parser.add_argument("--no-paper-claims", action="store_true", help="check only the --claims files")
    parser.add_argument("--no-wandb", action="store_true", help="no sweep-level W&B run (default: one, job_type "
                                                                "compare, offline without an API key)")
    args = parser.parse_args(argv)

    from backbone_lab.compare import compare
    from backbone_lab.compare.claim_file import ClaimFileError
    from backbone_lab.compare.report import CLAIM_COLUMNS, markdown_table

    try:
        info = compare(args.paths, args.out, plots=not args.no_plots, claim_files=args.claims,
                       paper_claims=not args.no_paper_claims, wandb_mode="disabled" if args.no_wandb else "auto")
    except (FileNotFoundError, ClaimFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(info["out_dir"])
    print(f"compared {info['n_runs']} runs; swept keys: {', '.join(info['swept_keys']) or 'none'}")
    if info["claims"]:
        print("\nclaims:")
        cols = [k for k in CLAIM_COLUMNS if k not in ("section", "paper", "why") and any(r.get(k) for r in info["claims"])]
        print(markdown_table([{k: r[k] for k in cols} for r in info["claims"]]))
    import csv

    for name in info["tables"]:
        with open(out / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            for k, v in list(r.items()):
                try:
                    r[k] = float(v) if v not in ("", None) and k not in ("run", "arm", "state", "window", "steps", "group") else v
                except ValueError:
                    pass
        keep = [k for k in rows[0] if k not in ("run_dir", "source", "paper_note", "error")] if rows else []
        print(f"\n{name}:")
        print(markdown_table([{k: r.get(k) for k in keep} for r in rows]))
    if info.get("wandb_run"):
        print(f"W&B run (job_type compare): {info['wandb_run']}")
    print(f"\nreport: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
