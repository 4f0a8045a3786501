"""Stage ``reheating``: this run projected on the backbone of ``source_run`` (paper §7, PAPER_MAP §4.3, W16).

One joint streamed pass over both stores (``analysis.reheating.reheating_projection``). Summary
block ``reheating``. Only with ``source_run``.
"""

from __future__ import annotations

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.reheating import reheating_projection
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import Number, StageResult


class ReheatingStage:
    name = "reheating"
    numbers = (
        Number("reheat_max_abs_a_rel_change", "max_abs_a_rel_change", "fraction",
               "max |a(t) − a_src(final)| / a_src(final) while reheating, in the source run's backbone frame (paper §7.1)",
               absent="no projection on the source backbone (analysis.source_run unset)"),
        Number("reheat_source_pc1_pct", "source_pc1_pct", "%", "PC1 share of the source run's row-normalised drift"),
    )

    def run(self, ctx: AnalysisContext) -> StageResult:
        if not ctx.cfg.source_run:
            return StageResult()
        r = reheating_projection(ctx.cfg.source_run, ctx.traj_dir, ctx.cfg, progress=ctx.progress)
        report = ("## Reheating projection (paper §7)\n\n"
                  f"Source {r['source_run']} (anchor {r['source_anchor_step']}), a_source(final) = {fmt(r['source_a_final'])}; "
                  f"max |Δa|/a over the reheating run = {fmt(r['max_abs_a_rel_change'])}.\n")
        return StageResult(summary=r, report=report)
