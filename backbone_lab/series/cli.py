"""``python -m backbone_lab.analyze SERIES trunk=<preset> [sketch_dim=k] [sketch_seed=s] [out=DIR] [key=value ...]``.

SERIES: a folder of ``step<N>/`` checkpoints, a hub cache folder, or a (step, path) list file
(`sources`); or ``hub:ORG/NAME revisions=step0,step1,… [cache_dir=DIR] [offline=true]``, the
revisions of a hub repository fetched into (or found in) the hub cache (`hub.fetch_revisions`). The series keys are ``trunk`` (preset or rule, `trunk_rules`; default gpt_neox),
``sketch_dim`` (0 = dense, the default; k = sparse-JL sketch of k numbers per block, `sketch`),
``sketch_seed``, ``sketch_nnz`` and ``out`` (the output folder; default ``<SERIES>/analysis``, or
``<list file stem>_analysis`` beside a list file). Every other key is an analysis key
(docs/ANALYSIS.md). The output is the analysis folder of a run (report.md, summary.json, figures),
which ``compare`` reads like any run, plus ``series_manifest.json`` (the trunk's foreign names,
shapes and blocks, the checkpoints); a sketched analysis also keeps its sketch trajectory in
``<out>/sketch_trajectory/`` (k·B float32 per checkpoint).

Bad input (missing checkpoint, other shapes, missing trunk tensors, mixed architectures,
duplicate or unsorted steps) stops with one line and exit code 2 before any Gram work.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backbone_lab.durable import atomic_write_json
from backbone_lab.series.sketch import DEFAULT_NNZ, DEFAULT_SEED, SketchSpec

SERIES_KEYS = ("trunk", "sketch_dim", "sketch_seed", "sketch_nnz", "out", "revisions", "cache_dir", "offline")
HUB_PREFIX = "hub:"
SERIES_MANIFEST = "series_manifest.json"
"""Written into the output folder: the trunk layout read from the series (foreign names, shapes,
offsets, blocks) and the checkpoints (step, path, label) — the manifest a run of ours has."""


@dataclass
class SeriesOptions:
    """The series keys of the command line (module doc)."""

    trunk: str = "gpt_neox"
    sketch_dim: int = 0
    sketch_seed: int = DEFAULT_SEED
    sketch_nnz: int = DEFAULT_NNZ
    out: str | None = None
    revisions: str = ""
    """With SERIES = ``hub:ORG/NAME``: comma-separated revisions (``step0,step1,step5000``)."""
    cache_dir: str | None = None
    """Hub cache folder (default: huggingface_hub's)."""
    offline: bool = False
    """Use only what the hub cache holds (no network)."""


def split_overrides(overrides: Sequence[str]) -> tuple[SeriesOptions, list[str]]:
    """(series options, remaining analysis overrides); raises ValueError on a bad value."""
    opts, rest = SeriesOptions(), []
    for o in overrides:
        key, _, val = o.partition("=")
        if key not in SERIES_KEYS or not _:
            rest.append(o)
            continue
        if key in ("sketch_dim", "sketch_seed", "sketch_nnz"):
            try:
                setattr(opts, key, int(val))
            except ValueError:
                raise ValueError(f"{key}={val!r} is not an integer") from None
        elif key == "offline":
            if val.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"offline={val!r} is not true/false")
            opts.offline = val.lower() in ("true", "1")
        else:
            setattr(opts, key, val)
    if opts.sketch_dim < 0:
        raise ValueError(f"sketch_dim={opts.sketch_dim} must be >= 0 (0 = dense)")
    if opts.sketch_dim:
        SketchSpec(opts.sketch_dim, opts.sketch_seed, opts.sketch_nnz)  # validates
    return opts, rest


def default_out(series: Path) -> Path:
    return series / "analysis" if series.is_dir() else series.with_name(f"{series.stem}_analysis")


def analyse_series(series: str, opts: SeriesOptions, cfg, progress=None) -> dict:
    """Open (and check) the series, then analyse it densely or through its sketch; the summary dict."""
    from backbone_lab.analysis.run_analysis import run_analysis
    from backbone_lab.series.reader import SeriesReader
    from backbone_lab.trajectory.store import TrajectoryReader

    if series.startswith(HUB_PREFIX):  # revisions of a hub repository, through the hub cache
        from backbone_lab.series.hub import fetch_revisions

        repo = series[len(HUB_PREFIX):]
        revs = [r.strip() for r in opts.revisions.split(",") if r.strip()]
        if not revs:
            raise ValueError(f"{series}: give the revisions, e.g. revisions=step0,step1,step5000")
        source = sorted(fetch_revisions(repo, revs, cache_dir=opts.cache_dir, local_files_only=opts.offline), key=lambda c: c.step)
        path = source[0].path.parent.parent  # the repository's cache folder
        default = Path(f"{repo.replace('/', '_')}_analysis")
    else:
        source = path = Path(series)
        default = default_out(path)
    out = Path(opts.out or cfg.out_dir or default)
    cfg.out_dir = str(out)
    reader = SeriesReader(source, trunk=opts.trunk)  # every header checked here, before any Gram work
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SERIES_MANIFEST, {"format": "backbone_lab.series", "version": 1, "tensors": reader.tensors,
                                              "dim": reader.dim, "blocks": reader.blocks, **reader.meta["series"]})
    try:
        if not opts.sketch_dim:
            return run_analysis(path, cfg, progress=progress, reader=reader)
        from backbone_lab.series.sketch_series import write_sketch_trajectory

        spec = SketchSpec(opts.sketch_dim, opts.sketch_seed, opts.sketch_nnz)
        traj = write_sketch_trajectory(reader, spec, out / "sketch_trajectory", progress=progress)
    finally:
        reader.close()
    return run_analysis(path, cfg, progress=progress, reader=TrajectoryReader(traj, verify=cfg.verify_crc))


def main(argv: Sequence[str]) -> int:
    from backbone_lab.analysis.config import parse_config
    from backbone_lab.analysis.summary import Summary
    from backbone_lab.trajectory.store import TrajectoryError

    series, overrides = argv[0], list(argv[1:])
    try:
        opts, rest = split_overrides(overrides)
        cfg = parse_config(rest)
        s = analyse_series(series, opts, cfg)
    except (TrajectoryError, ValueError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else e.__class__.__name__}", file=sys.stderr)
        return 2
    summ = Summary(s)
    sk = s.get("sketch")
    dim = s["trajectory"]["meta"].get("series", {}).get("trunk_dim", summ.dim)
    how = f", sketched k={sk['k']} per block, eps={sk['jl_epsilon']:.3f}" if sk else ""
    print(f"analysed {summ.snapshots_used} checkpoints of {series} (trunk={opts.trunk}, D={dim:,}{how})")
    print(f"PC1 row-norm {summ.pc1_rownorm_pct:.2f} %  raw {summ.pc1_raw_pct:.2f} %  k95 {summ.k95_rownorm}")
    for f in summ.flags:
        print(f"caveat [{f['code']}]: {f['message']}")
    print(f"outputs: {summ.out_dir}  ({s['elapsed_seconds']:.1f} s)")
    return 0
