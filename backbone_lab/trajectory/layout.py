"""What a snapshot holds: the tensor layout, each tensor's role, and how ranks slice it.

A *layout* is the ordered list of stored tensors, as in the manifest::

    {"name": "blocks.0.attn.qkv.weight", "shape": [192, 64], "offset": 0, "numel": 12288,
     "block": 0, "trunk": true}

`offset`/`numel` are in elements (the column index of the tensor in a flat snapshot). The
*roles* — `block` (index of the transformer block holding the tensor, or null) and `trunk`
(whether the tensor belongs to the trunk of PAPER_MAP §1.3) — are declared by the model that wrote
the trajectory (`GPT.snapshot_tensors`), so nothing downstream guesses them from names. For
tensors written without roles (old manifests, `TrajectoryWriter` fed from any training loop)
`default_roles` applies one generic rule: the block is the first integer component of the
dotted name (`blocks.3.…`, `model.layers.3.…`), and the trunk is every matrix (ndim ≥ 2) inside
a block — or every stored tensor when no block holds a matrix.

*Slicing* (data-parallel and FSDP runs): with world size W, rank r stores rows
`[r·c, (r+1)·c)` (c = ceil(rows / W), torch.chunk semantics, as FSDP2's dim-0 sharding) of
every tensor, so each rank writes about 1/W of the bytes and an FSDP rank writes exactly the
shard it owns. `slice_pieces` gives each rank's pieces as flat column ranges.

Pure Python/numpy: no torch import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

_FIRST_INT = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def build_layout(tensors: Iterable[Any]) -> list[dict]:
    """Layout entries from `(name, shape)` pairs or dicts with `name`, `shape` and optional
    `block`/`trunk`; offsets are assigned in the given order, missing roles by `default_roles`."""
    out, off = [], 0
    for t in tensors:
        if isinstance(t, dict):
            name, shape = t["name"], t["shape"]
        else:
            name, shape = t[0], t[1]
        shape = [int(s) for s in shape]
        numel = math.prod(shape) if shape else 1
        entry = {"name": str(name), "shape": shape, "offset": off, "numel": numel}
        if isinstance(t, dict) and "trunk" in t:
            entry["block"] = None if t.get("block") is None else int(t["block"])
            entry["trunk"] = bool(t["trunk"])
        out.append(entry)
        off += numel
    return with_roles(out)


def default_roles(layout: Sequence[dict]) -> list[tuple[int | None, bool]]:
    """(block, trunk) per tensor for tensors stored without declared roles (see module doc)."""
    blocks = []
    for t in layout:
        m = _FIRST_INT.search(t["name"])
        blocks.append(int(m.group(1)) if m else None)
    trunk = [b is not None and len(t["shape"]) >= 2 for b, t in zip(blocks, layout)]
    if not any(trunk):  # no matrix inside a block: the whole store is the trunk
        trunk = [True] * len(layout)
    return list(zip(blocks, trunk))


def with_roles(layout: list[dict]) -> list[dict]:
    """The layout with `block`/`trunk` filled in where missing (in place; returned)."""
    if all("trunk" in t for t in layout):
        return layout
    for t, (block, trunk) in zip(layout, default_roles(layout)):
        t.setdefault("block", block)
        t.setdefault("trunk", trunk)
    return layout


def signature(layout: Sequence[dict]) -> list[tuple]:
    """What must match between a writer and an existing trajectory: names and shapes in order."""
    return [(t["name"], tuple(t["shape"])) for t in layout]


# ---------------------------------------------------------------------------- subsets
def select(layout: Sequence[dict], subset: str) -> list[dict]:
    """Tensors of an analysis subset name.

    * `trunk`: the tensors declared trunk (PAPER_MAP §1.3);
    * `block{i}`: the trunk tensors of block i;
    * `block{i}_ln`: every stored tensor of block i (trunk + norms, when the store has them);
    * `all` / `full`: every stored tensor;
    * anything else: a regex matched in full against the tensor names.
    """
    if subset == "trunk":
        return [t for t in layout if t["trunk"]]
    if subset in ("all", "full"):
        return list(layout)
    m = re.fullmatch(r"block(\d+)(_ln)?", subset)
    if m:
        i, whole = int(m.group(1)), bool(m.group(2))
        return [t for t in layout if t["block"] == i and (whole or t["trunk"])]
    rx = re.compile(subset)
    return [t for t in layout if rx.fullmatch(t["name"])]


def trunk_blocks(layout: Sequence[dict]) -> list[int]:
    """Sorted indices of the blocks that hold trunk tensors."""
    return sorted({t["block"] for t in layout if t["trunk"] and t["block"] is not None})


def has_non_trunk_block_tensors(layout: Sequence[dict]) -> bool:
    """Whether the store holds block tensors outside the trunk (e.g. the blocks' norms)."""
    return any(t["block"] is not None and not t["trunk"] for t in layout)


# ---------------------------------------------------------------------------- slicing
def row_range(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank `rank` out of `rows` (torch.chunk semantics: chunks of ceil(rows/W),
    the last ranks may get fewer or none)."""
    c = -(-rows // world_size)
    return min(rank * c, rows), min((rank + 1) * c, rows)


def local_shape(entry: dict, rank: int, world_size: int) -> list[int]:
    """Shape of rank `rank`'s piece of one tensor (0-d tensors live on rank 0)."""
    shape = entry["shape"]
    if not shape:
        return [] if rank == 0 else [0]
    lo, hi = row_range(shape[0], rank, world_size)
    return [hi - lo] + list(shape[1:])


def slice_pieces(layout: Sequence[dict], rank: int, world_size: int) -> list[tuple[int, int]]:
    """Rank `rank`'s flat column ranges [start, stop), in increasing order (empty ones dropped)."""
    pieces = []
    for t in layout:
        if not t["shape"]:
            if rank == 0:
                pieces.append((t["offset"], t["offset"] + 1))
            continue
        row = t["numel"] // t["shape"][0] if t["shape"][0] else 0
        lo, hi = row_range(t["shape"][0], rank, world_size)
        if hi > lo:
            pieces.append((t["offset"] + lo * row, t["offset"] + hi * row))
    return pieces


def segments(layout: Sequence[dict], world_size: int) -> list[tuple[int, int, int, int]]:
    """`(start, stop, rank, offset_in_rank_file)` for every piece, sorted by start: where each
    column range of a flat snapshot lives when it is stored as `world_size` rank files."""
    out = []
    for r in range(world_size):
        pos = 0
        for a, b in slice_pieces(layout, r, world_size):
            out.append((a, b, r, pos))
            pos += b - a
    return sorted(out)
