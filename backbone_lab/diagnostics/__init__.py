"""In-training and offline diagnostics: gradient / update alignment with the backbone and Fisher
Rayleigh quotients (SPEC §5.8–5.10). See docs/DIAGNOSTICS.md.

Pure math (no Lightning): `alignment`, `fisher`, `reference_direction`, `records`.
Lightning glue: `callbacks`. Stored runs: `offline.run_offline_diagnostics`. Figures: `figures`.
Import the module you need (`from backbone_lab.diagnostics import fisher`): this package file
imports nothing, so reading the records or drawing the figures never loads torch.
"""
