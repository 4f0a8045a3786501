"""Trajectory analysis: pure functions (numpy in, numbers out) on streamed Gram matrices, run as stages.

Math (one idea per module, pure functions):

* ``gram``             streamed T×T drift Grams, re-anchoring, direction reconstruction
* ``pca``              exact uncentered PCA from a Gram (k95/k99, legacy top-10 denominator)
* ``decomposition``    a(t), ‖r(t)‖, f_b(t), speeds (PAPER_MAP §5.3)
* ``rolling``          rolling-window backbones, ρ, per-block c(w) (PAPER_MAP §5.4, §5.2)
* ``phases``           v_E, v_L, A_E / A_L (PAPER_MAP §5.5)
* ``powerlaw``         log-log fits and correlations with bootstrap CIs (PAPER_MAP §5.6–5.7)
* ``update_alignment`` cos(u, v_b) variants (PAPER_MAP §5.8)
* ``noise_floor``      E|cos| of a random direction in D dims (shared with the diagnostics)
* ``sign_changes``     where a signed cosine series changes sign (shared with the diagnostics)
* ``switching``        peak/trough switching directions and their dimensionality (PAPER_MAP §5.12)
* ``windows``          matched-val-loss window geometry across runs (PAPER_MAP §5.13)
* ``reheating``        reheating run projected on the source backbone (W16)
* ``selection``        which stored snapshots are analysed, and why others are dropped (W10)

Pipeline: ``stage`` (the Stage protocol, StageResult), ``registry`` (stage names), ``stages/``
(one module per built-in stage), ``context`` (what a stage reads), ``summary`` (summary.json as a
typed object), ``report``, ``tables``, ``plotting``, ``run_analysis``, ``config``, ``cli``.

No Lightning or torch import anywhere in this package (torch only when ``device`` names one, or
when a user stage / the training-diagnostics figures need it).
"""

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.gram import DriftGram, anchored_gram, row_normalise_gram, stream_grams
from backbone_lab.analysis.pca import PCAResult, pca_rows, uncentered_pca
from backbone_lab.analysis.stage import CsvTable, Flag, Stage, StageResult
from backbone_lab.analysis.summary import Summary

# The pipeline: ``from backbone_lab.analysis.run_analysis import run_analysis`` (not re-exported
# here: the submodule of the same name would shadow it).


__all__ = ["AnalysisConfig", "CsvTable", "DriftGram", "Flag", "PCAResult", "Stage", "StageResult", "Summary",
           "anchored_gram", "pca_rows", "row_normalise_gram", "stream_grams", "uncentered_pca"]
