"""The three parameter groups every optimizer factory is called with, split by shape and role.

    [{"params": matrix, "kind": "matrix"},                       # the other >= 2-D weights
     {"params": trunk,  "kind": "trunk"},                        # the trunk the model declares
     {"params": vector, "kind": "vector", "weight_decay": 0.0}]  # 1-D: norm weights / biases

* `trunk`: the weight matrices of the blocks, as the model declares them (`GPT.parameter_roles`;
  for the paper's GPT exactly the trunk the snapshots store, PAPER_MAP §1.3) — the matrices Muon
  orthogonalises;
* `matrix`: token / position embeddings and the head (Muon leaves them to AdamW);
* `vector`: never decayed (decay by shape, as nanoGPT does: a rename cannot change the optimizer).

The order keeps every parameter at its canonical position in the concatenated groups (the
embeddings come first in the model), so gradient clipping sums the per-tensor norms in the same
order as a plain decay / no-decay split — the paper preset's trajectory is unchanged to the bit.
torch keeps unknown keys such as `kind` in `param_groups` (and in `state_dict()`), so every
`torch.optim` class accepts these groups unchanged; `MuonWithAdamW` routes on `kind`.
"""

from __future__ import annotations

import torch

TRUNK, MATRIX, VECTOR = "trunk", "matrix", "vector"
KINDS = (MATRIX, TRUNK, VECTOR)


def parameter_groups_by_kind(model: torch.nn.Module) -> list[dict]:
    """`[matrix, trunk, vector]` groups of a model with `parameter_roles()` (tied weights once)."""
    roles = model.parameter_roles()
    groups: dict[str, list[torch.nn.Parameter]] = {kind: [] for kind in KINDS}
    for name, p in model.named_parameters():
        kind = VECTOR if p.ndim < 2 else (TRUNK if roles[name][1] else MATRIX)
        groups[kind].append(p)
    return [
        {"params": groups[MATRIX], "kind": MATRIX},
        {"params": groups[TRUNK], "kind": TRUNK},
        {"params": groups[VECTOR], "kind": VECTOR, "weight_decay": 0.0},
    ]
