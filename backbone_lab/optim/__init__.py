"""Optimizers that `torch.optim` does not ship, and the helpers around them.

Every `conf/optimizer/*.yaml` is a `_partial_: true` factory that `BackboneLitModule` calls with
the three parameter groups of `parameter_groups_by_kind` (`trunk`, `matrix`, `vector`; the
`vector` group has `weight_decay: 0`). A class here honours a per-group `weight_decay` and keeps
the extra `kind` key that torch stores in `param_groups`.

| module | what |
|---|---|
| `param_groups.py` | `parameter_groups_by_kind`: the trunk / matrix / vector split |
| `sgdw.py` | `SGDW`: SGD with decoupled weight decay applied after the step (PAPER_MAP §4.1, run C′) |
| `muon.py` | `MuonWithAdamW`: `torch.optim.Muon` on the trunk matrices, AdamW on the rest |
| `schedule_free.py` | `ScheduleFreeAdamW` and `evaluation_weights`: schedule-free's train / eval weights |

Used directly from YAML (no class here): `torch.optim.Adafactor` (`adafactor.yaml`) and
`lion_pytorch.Lion` (`lion.yaml`).
"""

from backbone_lab.optim.muon import MuonWithAdamW
from backbone_lab.optim.param_groups import KINDS, MATRIX, TRUNK, VECTOR, parameter_groups_by_kind
from backbone_lab.optim.schedule_free import (
    ScheduleFreeAdamW,
    evaluation_weights,
    has_evaluation_weights,
    use_training_weights,
)
from backbone_lab.optim.sgdw import SGDW

__all__ = [
    "KINDS",
    "MATRIX",
    "TRUNK",
    "VECTOR",
    "SGDW",
    "MuonWithAdamW",
    "ScheduleFreeAdamW",
    "evaluation_weights",
    "has_evaluation_weights",
    "parameter_groups_by_kind",
    "use_training_weights",
]
