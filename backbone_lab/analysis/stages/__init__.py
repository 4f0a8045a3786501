"""The built-in analysis stages, one module each (names and order: ``analysis.registry``).

    pca, decomposition, rolling, phases, fits, correlations, update_alignment, per_block,
    switching, windows, reheating, backbone_file, diagnostics, training_diagnostics

Each module holds one stage class: its math comes from the pure modules of ``backbone_lab.analysis``,
and it returns its summary block, report section, figures, CSV rows and flags (``analysis.stage``).
Modules are imported by the registry only when a stage is run.
"""
