"""The analysis stage: one analysis, returning everything about itself.

A stage is any object with a ``name`` and a ``run(ctx) -> StageResult``::

    class MyMetric:
        name = "my_metric"                 # its block in summary.json: summary["my_metric"]
        requires = ("decomposition",)      # stages that must run before it (optional)
        numbers = (Number("drift_cos_final", "cos_final", "cos", "cos(Δθ(final), v_b)", headline=True),)

        def run(self, ctx: AnalysisContext) -> StageResult:
            dec = ctx.need("decomposition")            # an earlier stage's in-memory result
            value = float(dec.a[-1] / dec.norm_delta[-1])
            return StageResult(summary={"cos_final": value},
                               report=f"## My metric\\n\\ncos(Δθ(final), v_b) = {value:.3f}\\n")

and is named in ``AnalysisConfig.extra_stages`` (``extra_stages=[my_pkg.my_mod:MyMetric]``, run
after the built-in stages) or ``AnalysisConfig.stages`` (a chosen list); a class is instantiated
without arguments. A stage that needs extra Gram matrices from the one streamed pass
defines ``gram_groups(reader, cfg) -> {name: column ranges}`` (see ``stages/per_block.py``).

`run_analysis` runs the configured stages in order, puts each ``summary`` under the stage's name
in summary.json, concatenates the ``report`` sections into report.md, lists the ``figures``,
writes the ``tables`` (CSV) and collects the ``flags`` (degenerate cases) at the top of both.
No stage writes summary.json or report.md itself.

``numbers`` (optional) declares the stage's numbers once: name, where in its block, unit, one
line, headline or not. Everything downstream is derived from these declarations (written into
summary.json's ``numbers`` table): the `Summary` accessors (``s.drift_cos_final``), the DONE
marker and console headline, the compare runs table, the W&B run summary (``analysis/<name>``),
the claim metrics that are plain lookups, and the summary.json key table of docs/ANALYSIS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from backbone_lab.analysis.context import AnalysisContext


@dataclass(frozen=True)
class Flag:
    """A degenerate case a reader must know about (e.g. p_ood at chance level).

    Attributes:
        code: short machine-readable name (``p_ood_at_chance``, ``early_is_whole_run``, ...).
        message: one sentence: what is degenerate and what the numbers then mean.
    """

    code: str
    message: str


@dataclass(frozen=True)
class Number:
    """One number a stage puts in summary.json, declared once.

    Attributes:
        name: its one name everywhere — `Summary` attribute, DONE / compare column, claim metric,
            W&B key ``analysis/<name>``.
        path: where it lives inside the stage's block (dotted, ``"rownorm.pc1_pct"``); a tuple
            lists alternatives, the first present wins (e.g. fixed-lag, else consecutive
            updates; or a key's older location, so old summary.json files stay readable).
        unit: ``%``, ``abs cos``, ``parameter units``, ``components``, ``step``, ...
        about: one line: what it measures (with the paper section).
        headline: shown in the DONE marker, the console and the compare runs table.
        aliases: older names still answered by `Summary` (attributes of earlier versions).
        absent: why a run may lack it (the claims' *not measured* reason); '' = generic.
    """

    name: str
    path: str | tuple[str, ...]
    unit: str
    about: str
    headline: bool = False
    aliases: tuple[str, ...] = ()
    absent: str = ""

    def paths(self, block: str) -> tuple[str, ...]:
        """Full dotted paths in summary.json of this number of the stage `block`."""
        rel = (self.path,) if isinstance(self.path, str) else tuple(self.path)
        return tuple(f"{block}.{p}" if block else p for p in rel)

    def entry(self, block: str) -> dict:
        """Its row of summary.json's ``numbers`` table."""
        return {"stage": block, "paths": list(self.paths(block)), "unit": self.unit, "about": self.about,
                "headline": self.headline, "aliases": list(self.aliases), "absent": self.absent}

    @classmethod
    def from_entry(cls, name: str, entry: dict) -> tuple[str, Number]:
        """(stage, Number with full paths) from a ``numbers`` table row."""
        return str(entry.get("stage", "")), cls(
            name=name, path=tuple(entry.get("paths") or ()), unit=str(entry.get("unit", "")),
            about=str(entry.get("about", "")), headline=bool(entry.get("headline", False)),
            aliases=tuple(entry.get("aliases") or ()), absent=str(entry.get("absent", "")))


def numbers_table(stages) -> dict[str, dict]:
    """name -> ``numbers`` table row for the numbers the given stage objects / classes declare."""
    table: dict[str, dict] = {}
    for st in stages:
        for num in getattr(st, "numbers", ()) or ():
            if num.name in table:
                raise ValueError(f"number {num.name!r} declared twice (stages {table[num.name]['stage']!r} "
                                 f"and {st.name!r})")
            table[num.name] = num.entry(st.name)
    return table


@dataclass
class CsvTable:
    """Rows for one CSV file of the output folder (written by `run_analysis`, not the stage).

    Several stages may contribute to the same file: tables with the *same* header are appended
    row-wise (e.g. trunk and per-block rows of ``update_alignment.csv``); tables with *disjoint*
    headers and the same number of rows are joined column-wise (e.g. A_E / A_L columns of the
    phases stage beside the rolling stage's ``rolling.csv``).
    """

    name: str
    header: list[str]
    rows: list[list[Any]]


@dataclass
class StageResult:
    """Everything one stage produced.

    Attributes:
        summary: its block of summary.json (any JSON-able value; None: no block).
        report: its markdown section of report.md ('' for none); starts with a ``## `` heading.
        figures: PNG files it wrote (inside the output folder).
        tables: CSV rows for the output folder.
        flags: degenerate cases found.
        data: in-memory results for later stages (``ctx.need(name)``); never written.
        top_level: keys placed at the top level of summary.json beside the stage blocks (e.g.
            ``beyond_null``, ``shrinkage_cos``); a key must not clash with a block or header key.
    """

    summary: Any = None
    report: str = ""
    figures: list[Path] = field(default_factory=list)
    tables: list[CsvTable] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    data: Any = None
    top_level: dict = field(default_factory=dict)


@runtime_checkable
class Stage(Protocol):
    """An analysis stage (see the module docstring); ``requires`` and ``gram_groups`` are optional."""

    name: str

    def run(self, ctx: AnalysisContext) -> StageResult:
        ...
