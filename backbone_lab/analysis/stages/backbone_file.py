"""Stage ``backbone_file``: write v_b as a D-vector, ``backbone_<subset>.npy`` (float32, unit norm).

One extra streamed pass (``gram.reconstruct_directions``); only with ``save_backbone``. Summary
value ``backbone_file``: the path. The file feeds ``reference.kind=file`` of the diagnostics.
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.gram import reconstruct_directions
from backbone_lab.analysis.stage import StageResult


class BackboneFileStage:
    name = "backbone_file"
    requires = ("decomposition",)

    def run(self, ctx: AnalysisContext) -> StageResult:
        cfg = ctx.cfg
        if not cfg.save_backbone:
            return StageResult()
        vb = ctx.need("decomposition").coeffs
        path = ctx.out_dir / f"backbone_{cfg.subset}.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(ctx.gram.dim,))
        reconstruct_directions(ctx.reader, ctx.gram, vb, columns=ctx.reader.subset_columns(cfg.subset),
                               chunk_bytes=cfg.chunk_mb << 20, out=mm[:, None])
        mm.flush()
        del mm
        return StageResult(summary=str(path), report=f"## Backbone file\n\nv_b (D = {ctx.gram.dim:,}, float32) saved to `{path.name}`.\n")
