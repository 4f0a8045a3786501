"""The analysis stage: one analysis, returning everything about itself.

A stage is any object with a ``name`` and a ``run(ctx) -> StageResult``::

    class MyMetric:
        name = "my_metric"                 # its block in summary.json: summary["my_metric"]
        requires = ("decomposition",)      # stages that must run before it (optional)

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
