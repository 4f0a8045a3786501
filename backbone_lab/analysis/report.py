"""``report.md``: the run header, the caveats, then each stage's section in stage order.

The sections are written by the stages themselves (``StageResult.report``); this module adds
the header (run, selection, dropped snapshots), the flagged degenerate cases and the footer, and
holds the small formatting helpers the stages share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backbone_lab.durable import atomic_write_text
from backbone_lab.run_dir import RunDir


REPORT_NAME = RunDir(".").report.name  # report.md


def fmt(x: Any, nd: int = 3) -> str:
    """A number for a report table: fixed decimals, '—' for None."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def steps_text(steps: Sequence[int], limit: int = 12) -> str:
    """`[1, 2, 3, ... (+n more)]` for long step lists."""
    steps = list(steps)
    if len(steps) <= limit:
        return str(steps)
    return f"[{', '.join(map(str, steps[:limit]))}, … (+{len(steps) - limit} more)]"


def figure_link(path: str | Path, out_dir: str | Path, label: str | None = None) -> str | None:
    """Markdown image of a PNG inside `out_dir` (relative link), None when it lies elsewhere."""
    p, out = Path(path).resolve(), Path(out_dir).resolve()
    if not p.is_relative_to(out):
        return None
    return f"![{label or p.stem}]({p.relative_to(out).as_posix()})"


def block_section(name: str, block: Any, out_dir: str | Path) -> str:
    """Generic section for a stage that returned a plain dict: its scalar values and figures."""
    lines = [f"## {name}\n"]
    if isinstance(block, Mapping):
        scalars = {k: v for k, v in block.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if scalars:
            lines.append("| key | value |\n|---|---|")
            lines += [f"| {k} | {fmt(v, 4)} |" for k, v in scalars.items()]
            lines.append("")
        figs = block.get("figures") or {}
        for p in (figs.values() if isinstance(figs, Mapping) else figs):
            link = figure_link(p, out_dir)
            if link:
                lines.append(link + "\n")
    return "\n".join(lines)


def dim_text(s: Mapping[str, Any]) -> str:
    """"D = …", or for a sketched trajectory the sketch's size and the trunk's D when known."""
    sk = s.get("sketch")
    if not sk:
        return f"D = {s['dim']:,}"
    trunk = ((s.get("trajectory") or {}).get("meta") or {}).get("series", {}).get("trunk_dim")
    return f"sketched: k = {sk['k']:,} per block, {s['dim']:,} numbers" + (f" for D = {trunk:,}" if trunk else "")


def header(s: Mapping[str, Any]) -> str:
    """Title, selection and dropped snapshots."""
    sel = s.get("selection") or {}
    lines = [f"# Backbone analysis — `{s['run_dir']}`\n",
             f"Subset **{s['subset']}** ({dim_text(s)}), anchor step **{s['anchor_step']}**, cadence {s['cadence']}, "
             f"T = {s['n_steps']} snapshots ({s['steps'][0]}…{s['steps'][-1]}), stored dtype {s['trajectory']['dtype']}, "
             f"crc verified: {s['trajectory']['crc_verified']}.\n"]
    if sel:
        lines.append(f"Snapshots: {sel['n_used']} of {sel['n_stored']} stored used — {sel['rule']}.")
        for d in sel.get("dropped", []):
            lines.append(f"- {d['n']} dropped ({d['reason']}): {steps_text(d['steps'])}")
        lines.append("")
    return "\n".join(lines)


def caveats(flags: Sequence[Mapping[str, Any]]) -> str:
    """The flagged degenerate cases, first thing after the header."""
    if not flags:
        return ""
    lines = ["## Caveats (degenerate cases)\n"]
    lines += [f"- **{f['code']}** ({f['stage']}): {f['message']}" for f in flags]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, summary: Mapping[str, Any], sections: Sequence[str]) -> Path:
    """Write ``<out_dir>/report.md``: header, caveats, the stage sections, footer; returns the path."""
    parts = [header(summary), caveats(summary.get("flags") or [])]
    parts += [sec.rstrip("\n") + "\n" for sec in sections if sec]
    parts.append(f"_Elapsed {summary.get('elapsed_seconds', 0):.1f} s (Gram stream {summary.get('gram_stream_seconds', 0):.1f} s). "
                 "All parameters: `summary.json['config']`._\n")
    return atomic_write_text(Path(out_dir) / REPORT_NAME, "\n".join(p for p in parts if p))
