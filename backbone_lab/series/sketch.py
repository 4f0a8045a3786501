"""Sketched snapshots: a seeded sparse Johnson–Lindenstrauss projection per block (paper §9.7's
"larger models" question at a storage cost independent of D).

Each block b of the trunk (D_b scalars) is mapped to k numbers, y_b = S_b θ_b, with S_b a sparse
JL matrix of the *block construction* (Kane & Nelson 2014, "Sparser Johnson–Lindenstrauss
transforms"; s = 1 is the CountSketch of Charikar, Chen & Farach-Colton 2002): the k rows are
split into s groups of m = k/s buckets, and every coordinate j of tensor `name` lands in one
bucket of each group r, with a random sign, scaled by 1/√s:

    y_b[r·m + h_r(name, j)] += σ_r(name, j) · θ_j / √s,      r = 0 … s−1.

h_r and σ_r come from a counter-based hash of (seed, tensor name, r, j) — an integer avalanche
mixer evaluated on the index itself: u_r(j) = mix(mix(mix(j_lo ⊕ key_name) ⊕ j_hi) ⊕ key_r), bucket
= (u_r >> 1) mod m, sign = the low bit — so S_b is never stored (no D × k matrix, no per-coordinate
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


def _hash32_u32(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """`hash32` on a uint32 numpy array (products wrap mod 2^32: the same values, half the bytes),
    in place when allowed (no temporaries beyond one shift buffer)."""
    mix, sh = np.uint32(_MIX), np.uint32(16)
    x = x if inplace else x.copy()
    t = np.empty_like(x)
    for _ in range(2):
        np.right_shift(x, sh, out=t)
        np.bitwise_xor(x, t, out=x)
        np.multiply(x, mix, out=x)
    np.right_shift(x, sh, out=t)
    np.bitwise_xor(x, t, out=x)
    return x


def tensor_keys(seed: int, name: str, nnz: int) -> list[int]:
    """[tensor key, group key 1 … s]: 32-bit hash keys of one tensor (seed, tensor name, group)."""
    base = int(hash32(hash32(int(seed) & M32) ^ zlib.crc32(name.encode())))
    return [base] + [int(hash32(base ^ hash32(r + 1))) for r in range(nnz)]


def _coordinate_hash(start: int, n: int, tkey: int) -> np.ndarray:
    """uint32 hash of coordinates start … start+n−1 of a tensor: hash32(hash32(j_lo ^ key) ^ j_hi)."""
    if start + n <= 1 << 32:  # the usual case: j_hi = 0
        u = np.arange(start, start + n, dtype=np.uint32)
        np.bitwise_xor(u, np.uint32(tkey), out=u)
        return _hash32_u32(_hash32_u32(u, inplace=True), inplace=True)
    j = np.arange(start, start + n, dtype=np.int64)
    u = _hash32_u32((j & M32).astype(np.uint32) ^ np.uint32(tkey))
    return _hash32_u32(u ^ (j >> 32).astype(np.uint32))


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


def slot_indices(start: int, n: int, keys: list[int], m: int) -> list[np.ndarray]:
    """Per group r, the slots u_r mod 2m (intp) of coordinates start … start+n−1: slot = 2·bucket + sign bit
    (u mod 2m = 2·((u >> 1) mod m) + (u & 1)), so one weighted bincount into 2m bins sketches a vector."""
    base = _coordinate_hash(start, n, keys[0])
    out = []
    for key in keys[1:]:
        u = _hash32_u32(np.bitwise_xor(base, np.uint32(key)), inplace=True)
        if (2 * m) & (2 * m - 1) == 0:  # a power of two: the same as mod
            np.bitwise_and(u, np.uint32(2 * m - 1), out=u)
        else:
            np.remainder(u, np.uint32(2 * m), out=u)
        out.append(u.astype(np.intp))
    return out


def add_slots(y: np.ndarray, slots: list[np.ndarray], values: np.ndarray, m: int, scale: float) -> None:
    """y (k,) += the sketch of ``values`` whose coordinates have ``slots`` (`slot_indices`)."""
    for r, idx in enumerate(slots):
        c = np.bincount(idx, weights=values, minlength=2 * m)
        y[r * m: (r + 1) * m] += scale * (c[0::2] - c[1::2])


def sketch_add_numpy(y: np.ndarray, values: np.ndarray, start: int, keys: list[int], spec: SketchSpec) -> None:
    """y (k,) float64 += S · values, for coordinates start … start+len(values)−1 of one tensor."""
    v = np.asarray(values).reshape(-1)
    m, scale = spec.buckets, 1.0 / math.sqrt(spec.nnz)
    for c0 in range(0, v.size, SKETCH_CHUNK):
        vc = v[c0: c0 + SKETCH_CHUNK]
        add_slots(y, slot_indices(start + c0, vc.size, keys, m), vc, m, scale)


def sketch_add_torch(y: Any, values: Any, start: int, keys: list[int], spec: SketchSpec) -> None:
    """Torch twin of `sketch_add_numpy` on `y`'s device (float64 accumulation); same hashes."""
    import torch

    v = values.detach().reshape(-1)
    m, scale = spec.buckets, 1.0 / math.sqrt(spec.nnz)
    for c0 in range(0, v.numel(), SKETCH_CHUNK):
        vc = v[c0: c0 + SKETCH_CHUNK].to(device=y.device, dtype=torch.float64) * scale
        j = torch.arange(start + c0, start + c0 + vc.numel(), dtype=torch.int64, device=y.device)
        base = hash32(hash32((j & M32) ^ keys[0]) ^ (j >> 32))
        for r, key in enumerate(keys[1:]):
            u = hash32(base ^ key)
            y[r * m: (r + 1) * m].index_add_(0, (u >> 1) % m, torch.where((u & 1) == 1, -vc, vc))


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

        dev = torch.device(device if device is not None else next(iter(named.values())).device)
        if dev.type == "cpu":  # the numpy twin: same values, ~10x faster than torch's CPU scatter
            Y = self.zeros_numpy()
            for name, t in named.items():
                self.add_numpy(Y, name, t.detach().reshape(-1).to(torch.float32).numpy())
            return torch.from_numpy(Y)
        Y = torch.zeros((len(self.blocks), self.spec.k), dtype=torch.float64, device=dev)
        for name, t in named.items():
            sketch_add_torch(Y[self.row[self.block_of[name]]], t, 0, self.keys[name], self.spec)
        return Y
