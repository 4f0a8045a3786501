"""In-training and offline diagnostics: gradient / update alignment with the backbone and Fisher
Rayleigh quotients (SPEC §5.8–5.10). See docs/DIAGNOSTICS.md.

Pure math (no Lightning): `alignment`, `fisher`, `reference_direction`, `records`.
Lightning glue: `callbacks`. Stored runs: `offline.run_offline_diagnostics`. Figures: `figures`.
"""

from backbone_lab.diagnostics.alignment import alignment_stats, cosine, noise_floor, sign_flips
from backbone_lab.diagnostics.fisher import (
    explicit_per_sample_grads, fisher_quotients, per_sample_directional_derivatives,
    random_complement_directions, rayleigh_minibatch, rayleigh_per_sample,
)
from backbone_lab.diagnostics.reference_direction import (
    ReferenceConfig, ReferenceDirections, load_direction, rolling_backbone,
)

__all__ = [
    "alignment_stats", "cosine", "noise_floor", "sign_flips",
    "explicit_per_sample_grads", "fisher_quotients", "per_sample_directional_derivatives",
    "random_complement_directions", "rayleigh_minibatch", "rayleigh_per_sample",
    "ReferenceConfig", "ReferenceDirections", "load_direction", "rolling_backbone",
]
