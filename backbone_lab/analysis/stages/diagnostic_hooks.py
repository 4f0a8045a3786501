"""Stage ``diagnostics``: the extra offline diagnostics of ``AnalysisConfig.diagnostics``.

Each entry is a function ``fn(ctx) -> dict`` — registered with ``@register_diagnostic("name")``
or named as ``package.module:function`` (e.g.
``backbone_lab.diagnostics.offline:analysis_hook``, which needs torch and is imported only
when named). The context answers the hooks' dict keys (run_dir, out_dir, cfg, reader, grams,
steps, anchor_step, backbone_coeffs, metrics, summary). Summary block ``diagnostics``:
name -> the returned dict; the report section embeds the figures each one lists under
``figures`` (inside the output folder).

This is the older form of a user stage (``stages=[..., package.module:object]``), kept for the
hooks and command lines that use it.
"""

from __future__ import annotations

from collections.abc import Callable

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.load_object import load_object
from backbone_lab.analysis.report import figure_link
from backbone_lab.analysis.stage import StageResult

# name -> fn(context) -> JSON-serialisable dict
DIAGNOSTICS: dict[str, Callable] = {}


def register_diagnostic(name: str) -> Callable:
    """Decorator registering an offline diagnostic under `name` (used via ``cfg.diagnostics``)."""

    def deco(fn: Callable) -> Callable:
        DIAGNOSTICS[name] = fn
        return fn

    return deco


def resolve_diagnostic(name: str) -> Callable:
    """A registered diagnostic, or ``package.module:function`` imported on demand."""
    if name in DIAGNOSTICS:
        return DIAGNOSTICS[name]
    if ":" in name:
        try:
            return load_object(name)
        except ValueError as e:
            raise ValueError(f"diagnostic {name!r} cannot be imported ({e})") from None
    raise ValueError(f"unknown diagnostic {name!r}; registered: {sorted(DIAGNOSTICS)} (or give module:function)")


class DiagnosticHooksStage:
    name = "diagnostics"

    def run(self, ctx: AnalysisContext) -> StageResult:
        if not ctx.cfg.diagnostics:
            return StageResult()
        fns = {name: resolve_diagnostic(name) for name in ctx.cfg.diagnostics}
        out = {name: fn(ctx) for name, fn in fns.items()}
        links = []
        for entry in out.values():
            figs = entry.get("figures", {}) if isinstance(entry, dict) else {}
            for name, path in sorted(figs.items()):
                link = figure_link(path, ctx.out_dir, label=name)
                if link:
                    links.append(link)
        report = ""
        if links:
            report = ("## Offline diagnostics: gradient vs update alignment, Fisher along the backbone (paper Figs. 2-3)\n\n"
                      f"From the hooks {', '.join(out)}; CSV files beside the figures.\n\n" + "\n\n".join(links) + "\n")
        return StageResult(summary=out, report=report)
