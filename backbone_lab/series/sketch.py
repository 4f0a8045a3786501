"""Sketched snapshots: a seeded sparse Johnson–Lindenstrauss projection per block (paper §9.7's
"larger models" question at a storage cost independent of D).

Each block b of the trunk (D_b scalars) is mapped to k numbers, y_b = S_b θ_b, with S_b a sparse
JL matrix of the *block construction* (Kane & Nelson 2014, "Sparser Johnson–Lindenstrauss
transforms"; s = 1 is the CountSketch of Charikar, Chen & Farach-Colton 2002): the k rows are
split into s groups of m = k/s buckets, and every coordinate j of tensor `name` lands in one
bucket of each group r, with a random sign, scaled by 1/√s:

    y_b[r·m + h_r(name, j)] += σ_r(name, j) · θ_j / √s,      r = 0 … s−1.

h_r and σ_r come from a counter-based hash of (seed, tensor name, r, j) — an integer avalanche
mixer evaluated on the index itself — so S_b is never stored (no D × k matrix, no per-coordinate
table): each tensor is sketched in one pass of s `bincount`/`index_add` calls over chunks, with
no matmul. The same function runs in numpy (series import, tests) and in torch on the training
device (the snapshot callback), bit-identical hashes in both (int64 arithmetic on 32-bit values,
no overflow).

Why this sketch and not a dense Gaussian or an SRHT: a dense Gaussian needs a D × k matrix (or
regenerating D·k normals per snapshot: 4·10^12 numbers for a 1B trunk at k = 4096); an SRHT needs a
Hadamard transform over a power-of-two padding of each block (O(D log D), a full-size buffer).
The sparse JL touches every coordinate s times, needs memory O(chunk + k) and parallelises as a
scatter-add on a GPU.

Why it works (the Gram): S is linear, so the sketch of a drift x_i = θ_i − θ_ref is y_i − y_ref,
and Ĝ_ij = ⟨S x_i, S x_j⟩ estimates G_ij = ⟨x_i, x_j⟩. With independent hashes it is unbiased,
E Ĝ_ij = G_ij, with

    Var Ĝ_ij = (1/k)·(‖x_i‖²‖x_j‖² + ⟨x_i,x_j⟩² − 2 Σ_c x_ic² x_jc²) ≤ 2‖x_i‖²‖x_j‖²/k

for every s (the s groups are independent CountSketches of m = k/s buckets, averaged). The JL
statement: for k ≥ C·ε⁻²·ln(T(T+1)/δ) and s = Θ(ε·k) (Kane–Nelson), all T(T+1)/2 entries obey
|Ĝ_ij − G_ij| ≤ ε‖x_i‖‖x_j‖ with probability ≥ 1 − δ, i.e. k = O(ε⁻² log T). We report
ε = √(8·ln(T(T+1)/δ)/k), δ = 0.05 (`jl_epsilon`: C = 8, the Gaussian JL constant; the sparse
sketch attains it up to a constant factor, checked on planted trajectories in
tests/test_series_sketch.py) and the rms bound √(2/k) per entry. The trunk Gram is the sum of
the per-block sketched Grams (independent hashes per tensor), so its relative error is smaller
than one block's when the blocks carry comparable drift.

Floating point: the sketch is accumulated in float64; stored sketches are *drift* sketches
y_t − y_origin (origin = the first snapshot, its sketch kept in float64), so the float32 storage
rounds relative to the drift, not to ‖θ‖ ≫ ‖x‖ (the cancellation the Gram streaming avoids too).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2^27: products of 32-bit values stay below 2^59 (no int64 overflow)
DEFAULT_NNZ = 4
DEFAULT_DELTA = 0.05
DEFAULT_SEED = 0
RECOMMENDED_K = 4096
"""Recommended sketch size per block (docs/ANALYSE_PYTHIA.md; the accuracy tests run at it)."""
SKETCH_CHUNK = 1 << 20  # elements hashed at once (memory O(chunk))


def hash32(x):
    """Avalanche mixer on non-negative int64 values < 2^32 (numpy array, torch tensor or int)."""
    x = (((x >> 16) ^ x) * _MIX) & M32
    x = (((x >> 16) ^ x) * _MIX) & M32
    return (x >> 16) ^ x


def tensor_keys(seed: int, name: str, nnz: int) -> list[int]:
    """The s 32-bit hash keys of one tensor (a function of seed, tensor name and group only)."""
    base = hash32(hash32(int(seed) & M32) ^ zlib.crc32(name.encode()))
    return [int(hash32(base ^ hash32(r + 1))) for r in range(nnz)]


def _slots(j, key: int, m: int):
    """Bucket in [0, m) and sign bit of coordinate indices j (int64 array/tensor) for one key."""
    u = hash32(hash32((j & M32) ^ key) ^ (j >> 32))
    return (u >> 1) % m, u & 1


@dataclass(frozen=True)
class SketchSpec:
    """What a sketch is: k numbers per block, nnz hashes per coordinate, the seed.

    Attributes:
        k: sketch size per block (a multiple of ``nnz``).
        seed: the projection's seed (different seeds: independent projections).
        nnz: s, non-zeros per coordinate (1 = CountSketch).
    """

    k: int
    seed: int = DEFAULT_SEED
    nnz: int = DEFAULT_NNZ

    def __post_init__(self) -> None:
        if self.k < 1 or self.nnz < 1 or self.k % self.nnz:
            raise ValueError(f"sketch_dim={self.k} must be a positive multiple of sketch_nnz={self.nnz}")

    @property
    def buckets(self) -> int:
        return self.k // self.nnz

    def record(self, T: int | None = None) -> dict:
        """The manifest / summary.json record: k, seed, nnz, method, and the bounds for T snapshots."""
        rec = {"k": self.k, "seed": self.seed, "nnz": self.nnz, "per": "block",
               "method": "sparse JL (block construction, counter-based hash), 1/sqrt(nnz) scaling",
               "rms_rel_error": rms_bound(self.k)}
        if T is not None:
            rec.update({"T": int(T), "delta": DEFAULT_DELTA, "jl_epsilon": jl_epsilon(self.k, T),
                        "bound": "|G_hat_ij - G_ij| <= eps * |x_i| |x_j| for all i, j with prob >= 1 - delta"})
        return rec


def rms_bound(k: int) -> float:
    """√(2/k): bound on the rms of (Ĝ_ij − G_ij)/(‖x_i‖‖x_j‖) for one block's sketch."""
    return math.sqrt(2.0 / k)


def jl_epsilon(k: int, T: int, delta: float = DEFAULT_DELTA) -> float:
    """ε with k = 8 ε⁻² ln(T(T+1)/δ): the JL bound on every relative Gram entry error."""
    return math.sqrt(8.0 * math.log(T * (T + 1) / delta) / k)


def k_for_epsilon(eps: float, T: int, delta: float = DEFAULT_DELTA) -> int:
    """Smallest k with jl_epsilon(k, T) ≤ eps."""
    return int(math.ceil(8.0 * math.log(T * (T + 1) / delta) / eps**2))


def sketch_add_numpy(y: np.ndarray, values: np.ndarray, start: int, keys: list[int], spec: SketchSpec) -> None:
    """y (k,) float64 += S · values, for coordinates start … start+len(values)−1 of one tensor."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    m, scale = spec.buckets, 1.0 / math.sqrt(spec.nnz)
    for c0 in range(0, v.size, SKETCH_CHUNK):
        vc = v[c0: c0 + SKETCH_CHUNK] * scale
        j = np.arange(start + c0, start + c0 + vc.size, dtype=np.int64)
        for r, key in enumerate(keys):
            b, s = _slots(j, key, m)
            w = np.where(s == 1, -vc, vc)
            y[r * m: (r + 1) * m] += np.bincount(b, weights=w, minlength=m)


def sketch_add_torch(y: Any, values: Any, start: int, keys: list[int], spec: SketchSpec) -> None:
    """Torch twin of `sketch_add_numpy` on `y`'s device (float64 accumulation); same hashes."""
    import torch

    v = values.detach().reshape(-1)
    m, scale = spec.buckets, 1.0 / math.sqrt(spec.nnz)
    for c0 in range(0, v.numel(), SKETCH_CHUNK):
        vc = v[c0: c0 + SKETCH_CHUNK].to(device=y.device, dtype=torch.float64) * scale
        j = torch.arange(start + c0, start + c0 + vc.numel(), dtype=torch.int64, device=y.device)
        for r, key in enumerate(keys):
            b, s = _slots(j, key, m)
            y[r * m: (r + 1) * m].index_add_(0, b, torch.where(s == 1, -vc, vc))


class BlockSketcher:
    """Sketches named trunk tensors into one k-vector per block.

    Args:
        spec: the sketch.
        layout: ``[{name, block, ...}]`` of the trunk tensors (the blocks in output order are the
            sorted distinct ``block`` values; a tensor without block goes to block -1).
    """

    def __init__(self, spec: SketchSpec, layout: list[dict]):
        self.spec = spec
        self.block_of = {t["name"]: (-1 if t.get("block") is None else int(t["block"])) for t in layout}
        self.blocks = sorted(set(self.block_of.values()))
        self.row = {b: i for i, b in enumerate(self.blocks)}
        self.keys = {n: tensor_keys(spec.seed, n, spec.nnz) for n in self.block_of}

    def sketch_layout(self) -> list[dict]:
        """The trajectory layout of a sketched snapshot: one (k,) tensor ``sketch.block{b}`` per block."""
        return [{"name": f"sketch.block{b}", "shape": [self.spec.k], "block": None if b < 0 else b, "trunk": True}
                for b in self.blocks]

    def zeros_numpy(self) -> np.ndarray:
        return np.zeros((len(self.blocks), self.spec.k), dtype=np.float64)

    def add_numpy(self, Y: np.ndarray, name: str, values: np.ndarray, start: int = 0) -> None:
        """Y (blocks, k) += sketch of ``values`` = coordinates [start, start+n) of tensor ``name``."""
        sketch_add_numpy(Y[self.row[self.block_of[name]]], values, start, self.keys[name], self.spec)

    def sketch_torch(self, named: dict[str, Any], device=None) -> Any:
        """(blocks, k) float64 tensor: the sketch of a mapping name -> tensor (on its device)."""
        import torch

        dev = device if device is not None else next(iter(named.values())).device
        Y = torch.zeros((len(self.blocks), self.spec.k), dtype=torch.float64, device=dev)
        for name, t in named.items():
            sketch_add_torch(Y[self.row[self.block_of[name]]], t, 0, self.keys[name], self.spec)
        return Y
