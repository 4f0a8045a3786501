"""The three parameter groups every optimizer factory is called with, split by shape and place.

    [{"params": trunk,  "kind": "trunk"},                        # >= 2-D weights inside the blocks
     {"params": matrix, "kind": "matrix"},                       # the other >= 2-D weights
     {"params": vector, "kind": "vector", "weight_decay": 0.0}]  # 1-D: LayerNorm weights / biases

* `trunk`: attention qkv / out and MLP up / down[/gate] of every block — the matrices Muon
  orthogonalises, and (for the GPT here) exactly the trunk the snapshots store (SPEC §1.3);
* `matrix`: token / position embeddings and the tied head (Muon leaves them to AdamW);
* `vector`: never decayed (decay by shape, as nanoGPT does: a rename cannot change the optimizer).

torch keeps unknown keys such as `kind` in `param_groups` (and in `state_dict()`), so every
`torch.optim` class accepts these groups unchanged; `MuonWithAdamW` routes on `kind`.
"""

from __future__ import annotations

import torch

TRUNK, MATRIX, VECTOR = "trunk", "matrix", "vector"
KINDS = (TRUNK, MATRIX, VECTOR)


def parameter_groups_by_kind(model: torch.nn.Module, blocks: str = "blocks") -> list[dict]:
    """`[trunk, matrix, vector]` groups of `model` (tied weights once, module-definition order).

    Args:
        model: a module whose transformer blocks live under the attribute `blocks`.
        blocks: name of that attribute (a `ModuleList` for `backbone_lab.model.GPT`).
    """
    in_blocks = {id(p) for p in getattr(model, blocks).parameters()}
    groups: dict[str, list[torch.nn.Parameter]] = {kind: [] for kind in KINDS}
    for p in model.parameters():  # a tied weight is listed once
        if p.ndim < 2:
            groups[VECTOR].append(p)
        else:
            groups[TRUNK if id(p) in in_blocks else MATRIX].append(p)
    return [
        {"params": groups[TRUNK], "kind": TRUNK},
        {"params": groups[MATRIX], "kind": MATRIX},
        {"params": groups[VECTOR], "kind": VECTOR, "weight_decay": 0.0},
    ]
