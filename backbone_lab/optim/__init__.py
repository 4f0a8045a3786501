"""Optimizers that `torch.optim` does not ship, and the helpers around them.

Every `conf/optimizer/*.yaml` is a `_partial_: true` factory that `BackboneLitModule` calls with
the parameter groups of `parameter_groups_by_kind` (see `param_groups.py`); a class here honours a
per-group `weight_decay` and keeps whatever extra keys (`kind`) the groups carry.

| module | what |
|---|---|
| `sgdw.py` | `SGDW`: SGD with decoupled weight decay applied after the step (SPEC §4.1, run C′) |
"""

from backbone_lab.optim.sgdw import SGDW

__all__ = ["SGDW"]
