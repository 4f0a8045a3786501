"""Canonical parameter subsets and the one flatten function (PAPER_MAP §1.3, bug W8).

The model declares which parameters form the trunk and which block holds each one
(`GPT.parameter_roles`); this module turns those roles into subsets, layouts and flat vectors:

* `trunk`: the weight matrices of every block (for the paper's GPT: `attn.qkv`, `attn.out_proj`,
  `mlp.w_up`, `mlp.w_down`; 3,145,728 scalars per block and 25,165,824 in all);
* `blocks_with_ln`: every parameter of every block (the trunk plus the blocks' norms);
* `full`: every parameter.

Canonical order = the order of `model.named_parameters()` (module-definition order), filtered by
the subset. `named_parameters()` lists a tied weight once (unlike `state_dict()`), so the same
names serve parameters and gradients. Every vector the project builds from a model — snapshot,
gradient, update, Fisher direction — goes through `flatten`, so parameter and gradient
coordinates can never be paired in different orders (the reference's Fisher bug, PAPER_MAP W8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn

SUBSETS = ("trunk", "blocks_with_ln", "full")


def _keep(role: tuple[int | None, bool], subset: str) -> bool:
    block, trunk = role
    if subset == "trunk":
        return trunk
    if subset == "blocks_with_ln":
        return block is not None
    if subset == "full":
        return True
    raise ValueError(f"unknown parameter subset {subset!r}; choose one of {SUBSETS}")


def named_subset(model: nn.Module, subset: str = "trunk") -> dict[str, torch.Tensor]:
    """Ordered name -> parameter tensor (live, not detached) for `subset`."""
    roles = model.parameter_roles()
    return {name: p for name, p in model.named_parameters() if _keep(roles[name], subset)}


def subset_layout(model: nn.Module, subset: str = "trunk") -> list[dict]:
    """The subset as a trajectory layout: `[{name, shape, block, trunk}, ...]` in canonical order
    (global shapes, also for sharded parameters)."""
    roles = model.parameter_roles()
    return [{"name": n, "shape": list(p.shape), "block": roles[n][0], "trunk": roles[n][1]}
            for n, p in model.named_parameters() if _keep(roles[n], subset)]


def subset_names(model: nn.Module, subset: str = "trunk") -> list[str]:
    """Names of the parameters of `subset`, in canonical order."""
    return list(named_subset(model, subset))


def flatten(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one 1-D vector (dtype/device of the inputs), in the given order."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flatten_params(model: nn.Module, subset: str = "trunk") -> torch.Tensor:
    """Flat copy of the subset's parameter values, shape (D,)."""
    with torch.no_grad():
        return flatten(p.detach() for p in named_subset(model, subset).values()).clone()


def flatten_grads(model: nn.Module, subset: str = "trunk") -> torch.Tensor:
    """Flat copy of the subset's current `.grad`s (zeros where a grad is None), shape (D,)."""
    params = named_subset(model, subset).values()
    return flatten(
        torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in params
    ).clone()


def unflatten(vector: torch.Tensor, shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Inverse of `flatten`: split a (D,) vector into named tensors of the given shapes (views)."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        n = int(torch.Size(shape).numel())
        out[name] = vector[offset : offset + n].view(shape)
        offset += n
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries but the shapes need {offset}")
    return out


def subset_shapes(model: nn.Module, subset: str = "trunk") -> dict[str, torch.Size]:
    return {name: p.shape for name, p in named_subset(model, subset).items()}


def subset_dim(model: nn.Module, subset: str = "trunk") -> int:
    return sum(p.numel() for p in named_subset(model, subset).values())
