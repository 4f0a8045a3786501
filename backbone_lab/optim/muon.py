"""Muon on the trunk matrices, AdamW on everything else — one optimizer object.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; `torch.optim.Muon`) replaces
the momentum update of a weight matrix by its nearest semi-orthogonal matrix:

    B ← μ·B + (1 − μ)·g                          # momentum (torch keeps an EMA)
    O ← NS₅(g + μ·(B − g)) if nesterov else NS₅(B)   # 5 Newton–Schulz steps ≈ U Vᵀ of the SVD
    θ ← (1 − lr·λ)·θ − lr·s(A, B)·O              # decoupled weight decay, shape-scaled step

It is defined for 2-D hidden-layer matrices only; embeddings, the head and the LayerNorm vectors
take AdamW (Loshchilov & Hutter 2019). Here the split follows the `kind` of each parameter group
(`param_groups.py`): `trunk` → Muon, `matrix` and `vector` → AdamW.

Learning-rate scaling: `adjust_lr_fn="match_rms_adamw"` (Liu et al. 2025, "Muon is Scalable for
LLM Training"), s(A, B) = 0.2·√max(A, B). The Newton–Schulz output has singular values ≈ 1, so
its RMS is ≈ 1/√max(A, B) and the scaled update has RMS ≈ 0.2·lr — the RMS of a typical AdamW
update. One `lr` (and one `weight_decay`) therefore fits both families, and the warmup + cosine
multiplier that Lightning's LambdaLR applies to every group moves both alike. Torch's default
("original", s = √max(1, A/B)) gives Muon updates ≈ 10–20× smaller than AdamW's at the same lr on
our shapes (it is meant for a separate Muon lr ≈ 0.02), and that ratio changes with the width.

Groups without a `kind` (the older two-group call `[decay, no_decay]`) all go to AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from backbone_lab.optim.param_groups import TRUNK

MUON, ADAMW = "muon", "adamw"
FAMILY_CLASSES: dict[str, type[torch.optim.Optimizer]] = {MUON: torch.optim.Muon, ADAMW: torch.optim.AdamW}


def family_of(group: dict[str, Any]) -> str:
    """`muon` for the trunk group, `adamw` for every other group (with or without a `kind`)."""
    return MUON if group.get("kind") == TRUNK else ADAMW


class MuonWithAdamW(torch.optim.Optimizer):
    """`torch.optim.Muon` on `kind == "trunk"` groups, `torch.optim.AdamW` on all others.

    There is one `param_groups` list, holding every group in the order given, each with the
    hyperparameters of its family; the two inner torch optimizers step *those same group dicts*
    and share this optimizer's `state`. So an LR scheduler, gradient clipping, `zero_grad` and
    `state_dict()` / `load_state_dict()` see one ordinary optimizer, and a resumed run continues
    bit for bit.

    Args:
        params: parameter groups (see `parameter_groups_by_kind`) or a plain list of tensors
            (then: one AdamW group).
        lr: peak learning rate of both families (see the module docstring for Muon's scaling).
        weight_decay: decoupled decay λ, θ ← (1 − lr·λ)·θ, in both families; a group's own
            `weight_decay` wins (the `vector` group sets 0).
        momentum, nesterov, ns_steps, adjust_lr_fn: Muon's (`torch.optim.Muon`).
        betas, eps: AdamW's.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = "match_rms_adamw",
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ):
        self.family_defaults = {
            MUON: {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                   "ns_steps": int(ns_steps), "adjust_lr_fn": adjust_lr_fn},
            ADAMW: {"lr": lr, "weight_decay": weight_decay, "betas": tuple(betas), "eps": eps},
        }
        self._inner: dict[str, torch.optim.Optimizer] = {}
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its family's optimizer fills (and validates) the group's hyperparameters."""
        group = dict(param_group)
        family = family_of(group)
        inner = self._inner.get(family)
        if inner is None:
            self._inner[family] = FAMILY_CLASSES[family]([group], **self.family_defaults[family])
        else:
            inner.add_param_group(group)
        super().add_param_group(group)  # the same dict: one list of groups for the outside world

    def _family_optimizers(self) -> list[torch.optim.Optimizer]:
        """The inner optimizers, bound to the current group dicts and state.

        Rebound on every step because `load_state_dict` replaces `param_groups` and `state`.
        """
        bound = []
        for family, cls in FAMILY_CLASSES.items():
            groups = [g for g in self.param_groups if family_of(g) == family]
            if not groups:
                continue
            inner = self._inner.get(family)
            if inner is None:  # after unpickling: the groups already hold every hyperparameter
                inner = self._inner[family] = cls(groups)
            inner.param_groups = groups
            inner.state = self.state
            bound.append(inner)
        return bound

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - see class docstring
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in self._family_optimizers():
            inner.step()
        return loss

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "family_defaults": self.family_defaults}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._inner = {}  # rebuilt from the (new) groups at the next step
