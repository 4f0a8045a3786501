"""SGD with decoupled weight decay, for `conf/optimizer/sgdw_nesterov.yaml`.

SGDW (PAPER_MAP §4.1, run C′): SGD (optionally Nesterov) whose weight decay is *decoupled* and applied
by hand after each step, exactly like the reference's `sgd_control.py`:

    θ ← SGD step(θ, g)                  # no L2 term in g
    θ ← (1 − lr_t · wd) · θ             # groups with wd > 0 only; lr_t = the scheduled lr of this step

`torch.optim.SGD(weight_decay=...)` instead adds wd·θ to the gradient (L2, runs B and C), which
then passes through the momentum buffer — a different trajectory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SGDW(torch.optim.SGD):
    """SGD with decoupled weight decay applied after the update: θ ← (1 − lr·wd)·θ.

    Args:
        params: tensors or parameter groups; a group's `weight_decay` (default: the `weight_decay`
            argument) is the *decoupled* rate of that group (0 disables it, e.g. LayerNorms).
        lr, momentum, dampening, nesterov: as in `torch.optim.SGD`.
        weight_decay: decoupled decay rate wd (the reference's C′ uses 0.5).

    The decoupled rate is stored per group under `decoupled_weight_decay`; the group's
    `weight_decay` seen by `torch.optim.SGD` is always 0 (no L2 term). Both survive
    `state_dict()` / `load_state_dict()`, so Lightning's exact resume works.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        **kwargs: Any,
    ):
        if weight_decay < 0:
            raise ValueError(f"SGDW: weight_decay must be >= 0, got {weight_decay}")
        self._default_decoupled_wd = float(weight_decay)  # read by add_param_group during super().__init__
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=0.0,
                         nesterov=nesterov, **kwargs)
        self.defaults["decoupled_weight_decay"] = float(weight_decay)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        group["decoupled_weight_decay"] = float(group.pop("weight_decay", self._default_decoupled_wd))
        group["weight_decay"] = 0.0
        super().add_param_group(group)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - see class docstring
        loss = super().step(closure)
        for group in self.param_groups:
            wd = group.get("decoupled_weight_decay", 0.0)
            if wd:
                factor = 1.0 - float(group["lr"]) * wd
                for p in group["params"]:  # every decay-group tensor, as the reference does
                    p.mul_(factor)
        return loss
