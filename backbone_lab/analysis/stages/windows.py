"""Stage ``windows``: geometry of explicit checkpoint windows of this run (PAPER_MAP §5.13, Table 5).

For each ``window_sets`` entry [s0, s1, ...]: anchor s0, row-normalised PC1 %, k95, k99, drift
‖θ(last) − θ(s0)‖ and sub-window PC1 stability. Summary block ``windows`` (a list; a window with
steps that were not analysed is ``skipped``). Only with ``window_sets``.
"""

from __future__ import annotations

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import StageResult
from backbone_lab.analysis.windows import window_geometry


class WindowsStage:
    name = "windows"

    def run(self, ctx: AnalysisContext) -> StageResult:
        if not ctx.cfg.window_sets:
            return StageResult()
        wins = []
        for w in ctx.cfg.window_sets:
            missing = [x for x in w if x not in ctx.steps]
            wins.append({"steps": list(w), "skipped": f"steps {missing} not analysed (check cadence/exclude_steps)"} if missing
                        else window_geometry(ctx.gram, w))
        lines = ["## Checkpoint windows (paper §5.2, Table 5)\n", "| steps | PC1 % | k95 | k99 | drift | stability |\n|---|---|---|---|---|---|"]
        for w in wins:
            label = f"[{w['steps'][0]}..{w['steps'][-1]}] ({len(w['steps'])})"
            if "skipped" in w:
                lines.append(f"| {label} | skipped: {w['skipped']} | | | | |")
            else:
                lines.append(f"| {label} | {fmt(w['pc1_pct'], 1)} | {w['k95']} | {w['k99']} | {fmt(w['drift'])} | {fmt(w.get('stability_mean'))} |")
        return StageResult(summary=wins, report="\n".join(lines) + "\n")
