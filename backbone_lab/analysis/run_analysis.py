"""The analysis of one run: ``run_analysis(run_dir, cfg) -> dict`` (the summary.json content).

1. Select the snapshots (``selection``: anchor, cadence, dropped steps with reasons).
2. One streamed pass over them builds the drift Grams: the analysis subset plus every group a
   stage asks for (``gram_groups``, e.g. the per-block Grams).
3. Run the configured stages in order (``AnalysisConfig.stages``, default: pca, decomposition,
   rolling, phases, fits, correlations, update_alignment, per_block, switching, windows,
   reheating, backbone_file, diagnostics, training_diagnostics; then ``extra_stages``). Each returns its summary block,
   report section, figures, CSV rows and flags (``analysis.stage``).
4. Write ``<out_dir>/``: the CSV tables, ``grams.npz``, ``summary.json`` (``analysis.summary``)
   and ``report.md`` (header, caveats, the stage sections).

Keys of summary.json: docs/ANALYSIS.md. No Lightning / torch import here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.context import AnalysisContext, read_codeword_count
from backbone_lab.analysis.gram import DriftGram, stream_grams
from backbone_lab.analysis.registry import resolve_stage
from backbone_lab.analysis.report import write_report
from backbone_lab.analysis.selection import select_steps
from backbone_lab.analysis.shrinkage import AnchorInner, project_out_anchor
from backbone_lab.analysis.stage import Flag, Stage
from backbone_lab.analysis.stages.diagnostic_hooks import DIAGNOSTICS, register_diagnostic, resolve_diagnostic  # noqa: F401
from backbone_lab.analysis.summary import FORMAT, SUMMARY_NAME, VERSION, Summary, json_safe
from backbone_lab.analysis.tables import merge_tables, write_table
from backbone_lab.durable import atomic_write
from backbone_lab.metrics_csv import read_columns
from backbone_lab.run_dir import RunDir
from backbone_lab.trajectory.store import TrajectoryReader, resolve_trajectory_dir

__all__ = ["DIAGNOSTICS", "GRAMS_NAME", "register_diagnostic", "resolve_diagnostic", "resolve_stages", "run_analysis"]

ProgressFn = Callable[[str, int, int], None]
GRAMS_NAME = "grams.npz"


def resolve_stages(names: Sequence[str]) -> list[Stage]:
    """Stage objects for `names`, checking that each stage's ``requires`` come earlier."""
    stages = [resolve_stage(n) for n in names]
    seen: list[str] = []
    for st in stages:
        missing = [r for r in getattr(st, "requires", ()) if r not in seen]
        if missing:
            raise ValueError(f"analysis stage {st.name!r} needs {missing} earlier in stages={list(names)}")
        seen.append(st.name)
    if len(set(seen)) != len(seen):
        raise ValueError(f"two stages share a summary name: {seen}")
    return stages


def _out_dir(run_dir: Path, traj_dir: Path, cfg: AnalysisConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if traj_dir != run_dir:
        return RunDir(run_dir).analysis
    # given the trajectory folder itself
    return RunDir(traj_dir.parent if traj_dir.name == RunDir(".").trajectory.name else traj_dir).analysis


def _merge_flags(flags: list[tuple[str, Flag]]) -> list[dict]:
    """[{stage, code, message}], one per code (stages naming the same case are joined)."""
    out: dict[str, dict] = {}
    for stage, f in flags:
        if f.code in out:
            out[f.code]["stage"] += f", {stage}"
        else:
            out[f.code] = {"stage": stage, "code": f.code, "message": f.message}
    return list(out.values())


def _write_grams(out_dir: Path, steps: list[int], gram: DriftGram, grams: dict[str, DriftGram]) -> None:
    def chunks():
        import io

        buf = io.BytesIO()
        np.savez(buf, steps=np.asarray(steps), ref_step=gram.ref_step,
                 **{f"G_{k}": v.G for k, v in grams.items()}, **{f"dim_{k}": v.dim for k, v in grams.items()})
        yield buf.getbuffer()

    atomic_write(out_dir / GRAMS_NAME, chunks())


def run_analysis(run_dir: str | os.PathLike, cfg: AnalysisConfig | None = None, progress: ProgressFn | None = None) -> dict:
    """Analyse a run dir (or a bare trajectory folder); returns the summary dict (= summary.json).

    Args:
        run_dir: ``<run_dir>`` with ``trajectory/`` (+ optional ``eval_metrics.csv``,
            ``codewords.json``, ``diagnostics/``), or the trajectory folder itself.
        cfg: parameters (default ``AnalysisConfig()``).
        progress: optional callback(stage, done, total) for long streams.
    Raises:
        TrajectoryError: missing/corrupt run dir or snapshot (one-line message).
        ValueError: an unknown stage, or a stage listed before one it needs.
    """
    cfg = cfg or AnalysisConfig()
    t_start = time.perf_counter()
    stages = resolve_stages(cfg.stage_names())
    run_dir = Path(run_dir)
    traj_dir = resolve_trajectory_dir(run_dir)
    reader = TrajectoryReader(traj_dir, verify=cfg.verify_crc, check_files=False)  # streamed steps are checked
    out_dir = _out_dir(run_dir, traj_dir, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir if traj_dir != run_dir else traj_dir.parent)
    metrics = read_columns(run.eval_metrics)
    selection = select_steps(reader.steps, cfg.anchor_step, cfg.cadence, cfg.exclude_steps, cfg.max_step)

    groups = {cfg.subset: reader.subset_columns(cfg.subset)}
    for st in stages:
        extra = getattr(st, "gram_groups", None)
        if extra is not None:
            groups.update(extra(reader, cfg))
    cb = (lambda d, t: progress("gram", d, t)) if progress else None
    grams = stream_grams(reader, groups, steps=selection.steps, ref=selection.anchor, chunk_bytes=cfg.chunk_mb << 20,
                         device=cfg.device, verify=cfg.verify_crc, progress=cb, anchor_inner=True)

    ai = grams[cfg.subset].meta["anchor_inner"]  # ⟨x_i, θ(anchor)⟩, ‖θ(anchor)‖², from the same pass
    anchor_inner = AnchorInner(p=ai["p"], q=ai["q"])
    if cfg.project_out_anchor:  # the shrinkage direction θ(anchor) out of every drift, before any stage
        grams[cfg.subset] = project_out_anchor(grams[cfg.subset], anchor_inner)
    ctx = AnalysisContext(run_dir=run_dir, run=run, traj_dir=traj_dir, out_dir=out_dir, cfg=cfg, reader=reader,
                          selection=selection, grams=grams, metrics=metrics, n_codewords=read_codeword_count(run),
                          progress=progress, anchor_inner=anchor_inner)
    gram = ctx.gram
    summary: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "run_dir": str(run_dir),
        "out_dir": str(out_dir),
        "trajectory": {"path": str(traj_dir), "dtype": reader.dtype, "stored_subset": reader.subset, "n_stored": len(reader.steps),
                       "dim_stored": reader.dim, "crc_verified": gram.meta["crc_verified"], "meta": reader.meta},
        "config": cfg.to_dict(),
        "steps": selection.steps,
        **ctx.common,
        "selection": selection.record(),
        "eval_metrics": {"present": metrics is not None, "has_p_ood": ctx.has_p_ood,
                         "n_rows": int(len(metrics["step"])) if metrics else 0, "n_codewords": ctx.n_codewords},
    }
    ctx.summary = summary

    sections, figures, tables, flags = [], [], [], []
    for st in stages:
        ctx.current = st.name
        res = st.run(ctx)
        ctx.results[st.name] = res
        if res.summary is not None:
            summary[st.name] = res.summary
        clash = [k for k in res.top_level if k in summary]
        if clash:
            raise ValueError(f"analysis stage {st.name!r} returns top-level keys {clash} that summary.json already has")
        summary.update(res.top_level)
        sections.append(res.report)
        figures += res.figures
        tables += res.tables
        flags += [(st.name, f) for f in res.flags]
    summary["flags"] = _merge_flags(flags)
    summary["stages"] = [st.name for st in stages if st.name in summary]  # the stage blocks, in order

    for table in merge_tables(tables):
        write_table(out_dir, table)
    _write_grams(out_dir, selection.steps, gram, grams)
    summary["elapsed_seconds"] = time.perf_counter() - t_start
    summary["gram_stream_seconds"] = gram.meta["stream_seconds"]
    if cfg.figures:
        summary["figures"] = [Path(p).name for p in figures]
    summary = json_safe(summary)
    Summary(summary).write(out_dir / SUMMARY_NAME)
    if cfg.report:
        write_report(out_dir, summary, sections)
    return summary
