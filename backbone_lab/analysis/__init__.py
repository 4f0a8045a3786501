"""Trajectory analysis: pure functions (numpy/torch in, numbers out) on streamed Gram matrices.

Map (one idea per module):

* ``gram``          streamed T×T drift Grams, re-anchoring, direction reconstruction
* ``pca``           exact uncentered PCA from a Gram (k95/k99, legacy top-10 denominator)
* ``decomposition`` a(t), ‖r(t)‖, f_b(t), speeds (SPEC §5.3)
* ``rolling``       rolling-window backbones, ρ, per-block c(w) (SPEC §5.4, §5.2)
* ``phases``        v_E, v_L, A_E / A_L (SPEC §5.5)
* ``powerlaw``      log-log fits and correlations with bootstrap CIs (SPEC §5.6–5.7)
* ``update_alignment``  cos(u, v_b) variants and noise floor (SPEC §5.8)
* ``switching``     peak/trough switching directions and their dimensionality (SPEC §5.12)
* ``windows``       matched-val-loss window geometry across runs (SPEC §5.13)
* ``reheating``     reheating run projected on the source backbone (W16)
* ``figures`` / ``report`` / ``run_analysis`` / ``config`` / ``cli``: the default pipeline

No Lightning import anywhere in this package.
"""

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.gram import DriftGram, anchored_gram, row_normalise_gram, stream_grams
from backbone_lab.analysis.pca import PCAResult, pca_rows, uncentered_pca

# The default pipeline: ``from backbone_lab.analysis.run_analysis import run_analysis`` (not
# re-exported here: the submodule of the same name would shadow it).


__all__ = ["AnalysisConfig", "DriftGram", "PCAResult", "anchored_gram", "pca_rows", "row_normalise_gram",
           "stream_grams", "uncentered_pca"]
