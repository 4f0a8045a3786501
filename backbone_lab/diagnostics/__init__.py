"""In-training and offline diagnostics: gradient / update alignment with the backbone and Fisher
Rayleigh quotients (PAPER_MAP §5.8–5.10). See docs/DIAGNOSTICS.md.

Pure math (no Lightning): `alignment`, `fisher`, `reference_direction`.
Lightning glue: `callbacks`. Stored runs: `offline.run_offline_diagnostics`. The CSV records they
write and the figures of them are read by the analysis and live there, torch-free:
`analysis.diagnostic_records`, `analysis.diagnostic_figures`.
Import the module you need (`from backbone_lab.diagnostics import fisher`): this package file
imports nothing.
"""
