"""``AnalysisConfig``: every parameter of the default analysis, validated (SPEC §5, W10).

Every output records the parameters it used (subset, anchor, normalisation, cadence, ...): the
resolved config is written into ``summary.json["config"]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from backbone_lab.analysis.registry import DEFAULT_STAGES, is_known

VALID_NORMALISATIONS = ("rownorm", "raw")
VALID_DEVICES_PREFIX = ("numpy", "cpu", "cuda", "mps")


@dataclass
class AnalysisConfig:
    """Parameters of ``run_analysis`` (override on the CLI as ``key=value``)."""

    subset: str = "trunk"
    """Parameter subset: ``trunk``, ``block{i}``, ``block{i}_ln``, ``all`` or a tensor-name regex."""
    anchor_step: Optional[int] = None
    """Drift reference θ(anchor). None = first stored snapshot (step 0 of our runs); 1 = paper."""
    cadence: Optional[int] = None
    """Uniform checkpoint cadence (W10). None = auto: a regular base cadence plus denser ranges
    (the paper's case) keeps the anchor and the base multiples, anything else uses every stored
    step (``analysis.selection``); 0 = every stored step; N = anchor + multiples of N."""
    exclude_steps: list[int] = field(default_factory=list)
    """Stored steps to ignore (e.g. a corrupt snapshot)."""
    max_step: Optional[int] = None
    """Ignore snapshots after this step."""
    normalisation: str = "rownorm"
    """Rows used for the global backbone v_b: ``rownorm`` (paper §4.1) or ``raw``."""
    top10_denominator: bool = False
    """Legacy reference mode: explained variance over the top 10 σ² only (W2). Off = exact."""
    rolling_window: int = 10
    """Checkpoints per rolling window (SPEC §5.4)."""
    rolling_stride: int = 1
    phase_boundary: Optional[int] = None
    """Phase boundary for v_E / v_L. None = 4000 if stored (with ≥ 2 steps each side), else mid-run."""
    fit_windows: Optional[list[list[int]]] = None
    """Power-law / correlation windows (lo, hi]; None = SPEC §5.6 windows (10k runs) or run quarters."""
    corr_bootstrap: int = 2000
    """Bootstrap resamples for correlation CIs (0 = none)."""
    corr_block: int = 1
    """Moving-block length for the bootstrap (1 = pairs bootstrap)."""
    corr_exclude_zero_r: bool = True
    """Drop the anchor point (‖r‖ = 0) from correlations (SPEC §5.7). False = reference beta2 /
    paper seed-42 "0–4k +0.856" convention."""
    seed: int = 0
    update_lag: Optional[int] = None
    """Lag of fixed-lag updates u(s) = θ(s) − θ(s − lag) (SPEC §5.8 variant 2); None = cadence."""
    early_max_step: int = 2000
    """'Early' updates for the alignment summary: step ≤ this."""
    per_block: bool = True
    """Also accumulate per-block Grams in the same pass (Table 2 PCA, per-block update alignment, c(w))."""
    per_block_ln: Optional[bool] = None
    """Per-block subset incl. LayerNorm (SPEC block incl. LN). None = when the store has LN tensors."""
    legacy_unsigned_blocks: bool = False
    """Per-block update alignment without sign fix (reference variant 1 artefact, W9)."""
    switching: bool = True
    """Switching-direction analysis when eval_metrics has p_ood (SPEC §5.12)."""
    switch_prominence: float = 0.03
    switch_neighbourhood: int = 3
    eval_noise_sigma: Optional[float] = None
    """σ of p_ood for switch-pair tiers (A ≥ 3σ, B ≥ 2σ); None = no tiers."""
    switch_top_k: int = 6
    """E_{2:k} transverse-energy upper index (paper: 6)."""
    window_sets: Optional[list[list[int]]] = None
    """Checkpoint windows [s0, s1, ...] for SPEC §5.13 window geometry within this run
    (anchor s0, row-normalised PC1 %, k95, k99, drift, sub-window stability)."""
    chunk_mb: int = 64
    """Float64 working block size of the streamed Gram (MiB)."""
    device: Optional[str] = None
    """None/'numpy' = numpy BLAS; a torch device ('cpu', 'cuda') for the Gram matmuls."""
    verify_crc: bool = True
    figures: bool = True
    report: bool = True
    out_dir: Optional[str] = None
    """Output folder; None = <run_dir>/analysis."""
    save_backbone: bool = False
    """Reconstruct v_b (float32 .npy, D values) with one extra pass."""
    source_run: Optional[str] = None
    """Reheating (W16): project this run's snapshots onto the v_b of this source run dir."""
    source_anchor_step: Optional[int] = None
    """Anchor of the source run's backbone (None = its first stored step)."""
    stages: Optional[list[str]] = None
    """Analysis stages, run in this order: built-in names (``registry.BUILTIN_STAGES``), names
    registered with ``registry.register_stage``, or ``package.module:object`` (docs/ANALYSIS.md).
    None = every built-in stage (``registry.DEFAULT_STAGES``)."""
    extra_stages: list[str] = field(default_factory=list)
    """Stages run after ``stages`` (a user metric without restating the built-in list)."""
    diagnostics: list[str] = field(default_factory=list)
    """Extra offline diagnostics run by the ``diagnostics`` stage (functions ctx -> dict; names
    registered with ``run_analysis.register_diagnostic`` or ``package.module:function``)."""
    chance_p_ood: Optional[float] = None
    """p_ood counts as "at chance" (no probe learning; correlations and switching with p_ood are
    flagged) when its best value is ≤ this. None = max(3 / n_codewords, 0.02): the best of many
    noisy evaluations of a 1/n guess among the n codewords of ``<run>/codewords.json`` reaches
    2–3/n; at least the paper's 0.02 (0.02 alone when the run has no codewords.json)."""
    progress: bool = True
    null_draws: int = 200
    """Draws of the null baselines (isotropic random walk with the run's own increment norms, and the
    run's increments shuffled; ``analysis.null_baseline``); 0 = no null baseline."""
    null_seed: Optional[int] = None
    """Seed of the null draws (None = ``seed``)."""
    null_max_seconds: Optional[float] = 120.0
    """Time limit of each null baseline's draws (random walk, shuffled); past it, after at least 40
    draws, fewer than ``null_draws`` are used (summary ``draws`` vs ``draws_requested``). Cost per
    draw grows as T³ (≈ 0.01 s at T = 51, 0.1 s at T = 101, 0.65 s at T = 401). None = no limit."""
    project_out_anchor: bool = False
    """Project θ(anchor) out of the drifts before every stage (the weight-decay shrinkage direction of
    runs that do not learn, e.g. the SGD controls; ``analysis.shrinkage``). Off = the paper's drifts."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        errs = []
        if self.normalisation not in VALID_NORMALISATIONS:
            errs.append(f"normalisation must be one of {VALID_NORMALISATIONS}, got {self.normalisation!r}")
        if self.cadence is not None and self.cadence < 0:
            errs.append("cadence must be None, 0 or > 0")
        if self.rolling_window < 3:
            errs.append("rolling_window must be >= 3")
        if self.rolling_stride < 1:
            errs.append("rolling_stride must be >= 1")
        if self.corr_bootstrap < 0 or self.corr_block < 1:
            errs.append("corr_bootstrap must be >= 0 and corr_block >= 1")
        if self.update_lag is not None and self.update_lag <= 0:
            errs.append("update_lag must be > 0")
        if self.null_draws < 0:
            errs.append("null_draws must be >= 0")
        if self.null_max_seconds is not None and self.null_max_seconds <= 0:
            errs.append("null_max_seconds must be None or > 0")
        if self.chunk_mb <= 0:
            errs.append("chunk_mb must be > 0")
        if self.switch_prominence < 0 or self.switch_neighbourhood < 1 or self.switch_top_k < 2:
            errs.append("switch_prominence >= 0, switch_neighbourhood >= 1, switch_top_k >= 2 required")
        if self.device is not None and not str(self.device).startswith(VALID_DEVICES_PREFIX):
            errs.append(f"device must start with one of {VALID_DEVICES_PREFIX}, got {self.device!r}")
        if self.window_sets is not None:
            for w in self.window_sets:
                if len(w) < 2 or sorted(w) != list(w):
                    errs.append(f"window {w} must list >= 2 increasing steps")
        names = self.stage_names()
        unknown = [s for s in names if not is_known(str(s))]
        if unknown:
            errs.append(f"unknown stages {unknown} (built-in: {', '.join(DEFAULT_STAGES)}; or package.module:object)")
        if len(set(names)) != len(names):
            errs.append("stages + extra_stages must not repeat a name")
        if self.chance_p_ood is not None and not 0 <= self.chance_p_ood < 1:
            errs.append("chance_p_ood must be in [0, 1)")
        if self.fit_windows is not None:
            for w in self.fit_windows:
                if len(w) != 2 or not w[0] < w[1]:
                    errs.append(f"fit window {w} must be [lo, hi] with lo < hi")
        if errs:
            raise ValueError("invalid analysis config: " + "; ".join(errs))

    def stage_names(self) -> list[str]:
        """The stages to run, in order: ``stages`` (default: all built-in) then ``extra_stages``."""
        return [*(DEFAULT_STAGES if self.stages is None else self.stages), *self.extra_stages]

    def to_dict(self) -> dict:
        return asdict(self)
