"""Command line: ``python -m backbone_lab.analyze <run_dir> [key=value ...]``.

Overrides are parsed with ``OmegaConf.from_dotlist`` onto :class:`AnalysisConfig`; an unknown
key, a bad value, or a missing/corrupt run dir or snapshot gives a one-line error and exit code 2
(no traceback). An existing analysis (``summary.json`` in the output folder, by default
``<run>/analysis``) is never replaced silently: the command refuses unless ``--overwrite`` is
given (``out_dir=<folder>`` writes a second analysis beside the first).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from backbone_lab.analysis.config import parse_config  # noqa: F401 - the CLI's parser, also used by series.cli

USAGE = ("usage: python -m backbone_lab.analyze <run_dir | trajectory_dir> [--overwrite] [key=value ...]   "
         "(keys: see docs/ANALYSIS.md)")


def _progress_factory(enabled: bool):
    if not enabled:
        return None, None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), TimeRemainingColumn(), transient=True)
        tasks: dict = {}

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(f"streaming {stage}", total=total)
            prog.update(tasks[stage], completed=done)

        return cb, prog
    except ImportError:  # pragma: no cover
        def cb(stage: str, done: int, total: int) -> None:
            print(f"\r{stage}: {100 * done / max(total, 1):5.1f}%", end="" if done < total else "\n", file=sys.stderr)

        return cb, None


def refuse_to_replace(run_dir: str, cfg, overwrite: bool) -> None:
    """An earlier analysis is a result: keep it unless `--overwrite` says to replace it (raises
    ValueError, a one-line error, when the output folder already holds a summary.json)."""
    from backbone_lab.analysis.run_analysis import analysis_dir
    from backbone_lab.analysis.summary import SUMMARY_NAME

    out = analysis_dir(run_dir, cfg)
    if not overwrite and (out / SUMMARY_NAME).exists():
        raise ValueError(f"{out} already holds an analysis ({SUMMARY_NAME}), kept so earlier results are not lost: "
                         f"pass --overwrite to replace it, or out_dir=<new folder> to keep both")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    overwrite = "--overwrite" in argv
    argv = [a for a in argv if a != "--overwrite"]
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    run_dir, overrides = argv[0], argv[1:]
    from backbone_lab.series.sources import is_series

    if is_series(run_dir):  # a checkpoint series (step<N>/ folders, a list file): backbone_lab.series.cli
        from backbone_lab.series.cli import main as series_main

        return series_main(argv)
    from backbone_lab.analysis.run_analysis import run_analysis
    from backbone_lab.durable import LinkedFolderError
    from backbone_lab.trajectory.store import TrajectoryError

    try:
        cfg = parse_config(overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cb, prog = _progress_factory(cfg.progress and sys.stderr.isatty())
    try:
        refuse_to_replace(run_dir, cfg, overwrite)
        if prog is not None:
            with prog:
                s = run_analysis(run_dir, cfg, progress=cb)
        else:
            s = run_analysis(run_dir, cfg, progress=cb)
    except (TrajectoryError, ValueError, FileNotFoundError, LinkedFolderError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else e.__class__.__name__}", file=sys.stderr)
        return 2
    from backbone_lab.analysis.summary import Summary

    summ = Summary(s)
    print(f"analysed {summ.snapshots_used} of {s['trajectory']['n_stored']} snapshots of {summ.subset} "
          f"(D={summ.dim:,}, anchor {summ.anchor_step}) from {s['trajectory']['path']}")
    print(f"PC1 row-norm {summ.pc1_rownorm_pct:.2f} %  raw {summ.pc1_raw_pct:.2f} %  k95 {summ.k95_rownorm}  "
          f"f_b final {100 * summ.backbone_frac_final:.1f} %  mean {100 * (summ.backbone_frac_mean or 0):.1f} %")
    for f in summ.flags:
        print(f"caveat [{f['code']}]: {f['message']}")
    print(f"outputs: {summ.out_dir}  ({s['elapsed_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
