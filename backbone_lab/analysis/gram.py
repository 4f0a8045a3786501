"""Streamed T×T Gram matrices of trajectory drifts (SPEC §5.0 "efficient algorithm", W1).

Everything downstream (PCA, a(t), ‖r(t)‖, rolling windows, phase backbones, update alignment,
switching directions, reheating projections) is computed from one float64 Gram

    G_ij = <x_i, x_j>,   x_i = θ(s_i) − θ(s_ref)   (drift from a reference snapshot),

accumulated in a single pass over column chunks of the store. Accumulating drifts (not raw θ)
avoids the cancellation of S_ij − S_ia − S_aj + S_aa with ‖θ‖² ≫ ‖x‖². The float32 snapshot
values are differenced in float64 (exact), the products are accumulated in float64.

Any other anchor a follows algebraically: <θ_i − θ_a, θ_j − θ_a> = G_ij − G_ia − G_aj + G_aa.

Directions are represented by *coefficient vectors* c ∈ ℝ^T over the drift rows: v = Σ_i c_i x_i
(= Xᵀc). Inner products are then cᵀ G d; no D-dimensional vector is ever formed.
Peak memory: O(T² · groups + T · chunk), independent of D.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from backbone_lab.trajectory.store import TrajectoryError, TrajectoryReader, merge_ranges

ProgressFn = Callable[[int, int], None]

DEFAULT_CHUNK_BYTES = 64 << 20  # size of the float64 working block (T × c × 8 bytes)
_BLOCK_COLS = 4096  # cache-sized sub-block for the float64 difference + rank update


def _blas_single_thread():
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing
        return contextlib.nullcontext()


@dataclass
class DriftGram:
    """Gram of drifts x_i = θ(steps[i]) − θ(ref_step) over one parameter subset.

    Attributes:
        steps: (T,) int, the snapshot steps in row order (sorted).
        G: (T, T) float64, G_ij = <x_i, x_j> in squared parameter units.
        ref_step: the step whose snapshot was subtracted (its row/column are zero).
        subset: label of the parameter subset (e.g. ``trunk``, ``block0``).
        dim: D, number of parameters in the subset.
        meta: provenance (crc verification, timing, source labels for joint Grams).
    """

    steps: np.ndarray
    G: np.ndarray
    ref_step: int
    subset: str
    dim: int
    meta: dict = field(default_factory=dict)

    def index(self, step: int) -> int:
        i = int(np.searchsorted(self.steps, step))
        if i >= len(self.steps) or self.steps[i] != step:
            raise KeyError(f"step {step} not in Gram (steps {self.steps[0]}..{self.steps[-1]})")
        return i

    def indices(self, steps: Sequence[int]) -> np.ndarray:
        return np.array([self.index(int(s)) for s in steps], dtype=int)

    def anchored(self, anchor_index: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """K_ij = <x_i − x_a, x_j − x_a> for i, j in ``rows`` (default all). Shape (n, n)."""
        return anchored_gram(self.G, anchor_index, rows)

    def inner(self, c: np.ndarray, d: np.ndarray) -> np.ndarray:
        """<Xᵀc, Xᵀd> = cᵀ G d (works column-wise for 2-D coefficient matrices)."""
        return np.asarray(c).T @ self.G @ np.asarray(d)

    def norm(self, c: np.ndarray) -> float:
        return float(np.sqrt(max(float(c @ self.G @ c), 0.0)))


def anchored_gram(G: np.ndarray, a: int, rows: Sequence[int] | None = None) -> np.ndarray:
    """Re-anchor a drift Gram: K_ij = G_ij − G_ia − G_aj + G_aa, restricted to ``rows``."""
    idx = np.arange(G.shape[0]) if rows is None else np.asarray(rows, dtype=int)
    ga = G[idx, a]
    return G[np.ix_(idx, idx)] - ga[:, None] - ga[None, :] + G[a, a]


def row_normalise_gram(K: np.ndarray, floor: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Gram of row-normalised rows: K_ij / (‖x_i‖‖x_j‖), norms floored at ``floor``.

    Returns (K_normalised, norms) with norms (n,) = sqrt(diag K).
    """
    norms = np.sqrt(np.clip(np.diag(K), 0.0, None))
    d = np.maximum(norms, floor)
    return K / d[:, None] / d[None, :], norms


def coeff_rows(T: int, rows: Sequence[int], anchor: int | None) -> np.ndarray:
    """Coefficient matrix C (n, T) of drift rows x_rows − x_anchor (anchor None: x_rows)."""
    rows = np.asarray(rows, dtype=int)
    C = np.zeros((len(rows), T))
    C[np.arange(len(rows)), rows] = 1.0
    if anchor is not None:
        C[:, anchor] -= 1.0
    return C


def _segments(groups: Mapping[str, Sequence[slice]]) -> tuple[list[slice], np.ndarray, list[list[str]]]:
    """Partition the union of all group ranges into atomic segments, each in a fixed set of groups."""
    union = merge_ranges([r for rs in groups.values() for r in rs])
    bounds = sorted({b for rs in groups.values() for r in rs for b in (r.start, r.stop)})
    seg_starts, members = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        names = [g for g, rs in groups.items() if any(r.start <= a and b <= r.stop for r in rs)]
        seg_starts.append(a)
        members.append(names)
    return union, np.array(bounds, dtype=np.int64), members


def stream_grams(
    readers: TrajectoryReader | Sequence[TrajectoryReader],
    groups: Mapping[str, Sequence[slice]],
    steps: Sequence[int] | Sequence[Sequence[int]] | None = None,
    ref: tuple[int, int] | int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    device: str | None = None,
    verify: bool = True,
    progress: ProgressFn | None = None,
    threads: int | None = None,
    prefetch: bool = True,
    anchor_inner: bool = False,
) -> dict[str, DriftGram]:
    """One streamed pass: drift Grams of several column groups (and several stores).

    Args:
        readers: one reader, or several stores with identical tensor layout (e.g. a source run and
            its reheating run); their rows are stacked in order.
        groups: name -> column ranges (e.g. ``{"trunk": reader.subset_columns("trunk"),
            "block0": ...}``). Groups may overlap; the pass reads the union once.
        steps: steps to use (one list per reader when several); default all stored steps.
        ref: reference snapshot subtracted from every row, ``(reader_index, step)`` or a step of
            the first reader; default the first step of the first reader.
        chunk_bytes: size of the float64 working block; chunk columns = chunk_bytes / (8 T).
        device: None/"numpy" for numpy float64 BLAS, or a torch device string ("cpu", "cuda")
            for torch float64 matmuls.
        verify: chain crc32 over whole files while streaming (only when the union covers them).
        progress: optional callback(done_columns, total_columns).
        threads: compute threads for the numpy path (default min(8, cpu count)); BLAS is limited
            to one thread each meanwhile (T×T rank updates do not scale inside BLAS).
        prefetch: read (and crc-check) the next chunk in a background thread.
        anchor_inner: also accumulate p_i = <x_i, θ(ref)> and q = ‖θ(ref)‖² per group (the
            shrinkage direction, ``analysis.shrinkage``), in ``meta["anchor_inner"] = {"p": (T,),
            "q": float}``; costs a T-vector product per block (1/T of the Gram's work).

    Returns:
        name -> DriftGram. For several readers the Gram rows are the concatenation; ``steps`` of
        the result is then the concatenated step list (not sorted) and ``meta["sources"]`` holds
        the per-row reader index.
    """
    if isinstance(readers, TrajectoryReader):
        readers = [readers]
        steps = [steps] if steps is not None else None
    readers = list(readers)
    steps_l = [list(r.steps) if steps is None or steps[i] is None else [int(s) for s in steps[i]] for i, r in enumerate(readers)]
    for i, r in enumerate(readers[1:], start=1):
        if r.names != readers[0].names or r.shapes != readers[0].shapes:
            raise TrajectoryError(f"{r.path}: tensor layout differs from {readers[0].path}; joint Grams need identical stores")
    if ref is None:
        ref = (0, steps_l[0][0])
    elif isinstance(ref, (int, np.integer)):
        ref = (0, int(ref))
    src_of_row = np.concatenate([np.full(len(s), i) for i, s in enumerate(steps_l)])
    all_steps = np.concatenate([np.asarray(s, dtype=np.int64) for s in steps_l])
    offsets = np.cumsum([0] + [len(s) for s in steps_l])
    try:
        ref_row = int(offsets[ref[0]] + steps_l[ref[0]].index(int(ref[1])))
    except ValueError:
        raise TrajectoryError(f"reference step {ref[1]} not among the streamed steps of {readers[ref[0]].path}") from None
    T = len(all_steps)
    groups = {k: merge_ranges(list(v)) for k, v in groups.items()}
    if not groups or any(not v for v in groups.values()):
        raise TrajectoryError("stream_grams: every group needs at least one column range")
    union, bounds, members = _segments(groups)
    total = sum(r.stop - r.start for r in union)
    chunk_cols = max(1024, int(chunk_bytes) // (8 * T))
    full_cover = union == [slice(0, readers[0].dim)]

    use_torch = device not in (None, "numpy")
    if use_torch:
        import torch

        tdev = torch.device(device)
        acc = {g: torch.zeros((T, T), dtype=torch.float64, device=tdev) for g in groups}
        ain = {g: torch.zeros(T + 1, dtype=torch.float64, device=tdev) for g in groups}
        n_threads = 1
    else:
        n_threads = max(1, int(threads if threads is not None else min(8, os.cpu_count() or 1)))
        accs = [{g: np.zeros((T, T), dtype=np.float64) for g in groups} for _ in range(n_threads)]
        ains = [{g: np.zeros(T + 1, dtype=np.float64) for g in groups} for _ in range(n_threads)]  # [p..., q]
        bufs = [np.empty((T, _BLOCK_COLS), dtype=np.float64) for _ in range(n_threads)]
        pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None

    def pieces(sl: slice) -> list[tuple[int, int, list[str]]]:
        """Split a chunk at segment boundaries and into cache-sized blocks: (a, b, groups)."""
        cut = bounds[(bounds > sl.start) & (bounds < sl.stop)]
        edges = [sl.start, *cut.tolist(), sl.stop]
        out_p = []
        for a, b in zip(edges[:-1], edges[1:]):
            seg = int(np.searchsorted(bounds, a, side="right")) - 1
            names = members[seg] if 0 <= seg < len(members) else []
            if names:
                out_p.extend((x, min(x + _BLOCK_COLS, b), names) for x in range(a, b, _BLOCK_COLS))
        return out_p

    def work(k: int, block: np.ndarray, c0: int, my: list[tuple[int, int, list[str]]]) -> None:
        # float32 -> float64 and the exact difference to the reference row, in cache-sized
        # blocks, then a rank-update of the T×T Gram (BLAS syrk)
        acc_k, buf = accs[k], bufs[k]
        for a, b, names in my:
            Y = buf[:, : b - a]
            np.subtract(block[:, a - c0: b - c0], block[ref_row, a - c0: b - c0], out=Y, dtype=np.float64)
            g = Y @ Y.T
            for n in names:
                acc_k[n] += g
            if anchor_inner:
                r = block[ref_row, a - c0: b - c0].astype(np.float64)
                pq = np.append(Y @ r, r @ r)
                for n in names:
                    ains[k][n] += pq

    t0 = time.perf_counter()
    gens = [r.iter_column_chunks(chunk_cols, steps=s, columns=union, verify=verify, prefetch=prefetch, reuse_buffers=True) for r, s in zip(readers, steps_l)]
    done = 0
    limiter = _blas_single_thread() if (not use_torch and n_threads > 1) else contextlib.nullcontext()
    try:
        with limiter:
            for parts in zip(*gens):
                sl = parts[0][0]
                block = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts], axis=0)
                if use_torch:
                    X = torch.from_numpy(block).to(tdev).double()
                    ref_vals = X[ref_row].clone()
                    X -= ref_vals
                    for a, b, names in pieces(sl):
                        Xs = X[:, a - sl.start: b - sl.start]
                        g = Xs @ Xs.T
                        for n in names:
                            acc[n] += g
                        if anchor_inner:
                            r = ref_vals[a - sl.start: b - sl.start]
                            pq = torch.cat([Xs @ r, (r @ r).reshape(1)])
                            for n in names:
                                ain[n] += pq
                else:
                    ps = pieces(sl)
                    if pool is None:
                        work(0, block, sl.start, ps)
                    else:
                        share = [ps[k::n_threads] for k in range(n_threads)]
                        list(pool.map(lambda k: work(k, block, sl.start, share[k]), range(n_threads)))
                done += sl.stop - sl.start
                if progress is not None:
                    progress(done, total)
    finally:
        for gen in gens:
            gen.close()
        if not use_torch and pool is not None:
            pool.shutdown()
    elapsed = time.perf_counter() - t0
    if not use_torch:
        acc = {g: sum(a[g] for a in accs) for g in groups}
        ain = {g: sum(a[g] for a in ains) for g in groups}

    out = {}
    for g, M in acc.items():
        M = M.cpu().numpy() if use_torch else M
        M = 0.5 * (M + M.T)
        pq = ain[g].cpu().numpy() if use_torch else ain[g]
        extra = {"anchor_inner": {"p": pq[:T].copy(), "q": float(pq[T])}} if anchor_inner else {}
        out[g] = DriftGram(
            steps=all_steps.copy(),
            G=M,
            ref_step=int(ref[1]),
            subset=g,
            dim=int(sum(r.stop - r.start for r in groups[g])),
            meta={
                "crc_verified": bool(verify and full_cover),
                "stream_seconds": elapsed,
                "chunk_cols": chunk_cols,
                "threads": n_threads,
                "device": device or "numpy",
                "sources": src_of_row.tolist() if len(readers) > 1 else None,
                "ref_source": int(ref[0]),
                **extra,
            },
        )
    return out


def gram_from_matrix(theta: np.ndarray, steps: Sequence[int] | None = None, ref_index: int = 0, subset: str = "dense") -> DriftGram:
    """DriftGram of an in-memory (T, D) snapshot matrix (tests, small problems)."""
    theta = np.asarray(theta, dtype=np.float64)
    X = theta - theta[ref_index]
    steps = np.arange(theta.shape[0]) if steps is None else np.asarray(steps, dtype=np.int64)
    return DriftGram(steps=steps, G=X @ X.T, ref_step=int(steps[ref_index]), subset=subset, dim=theta.shape[1])


def reconstruct_directions(
    reader: TrajectoryReader,
    gram: DriftGram,
    coeffs: np.ndarray,
    columns: Sequence[slice] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    out: np.ndarray | None = None,
    dtype=np.float32,
    verify: bool = False,
) -> np.ndarray:
    """D-dimensional directions v_k = Xᵀ c_k, reconstructed chunk-wise (one extra pass).

    Args:
        coeffs: (T,) or (T, k) coefficient vectors over ``gram``'s rows.
        columns: the subset's column ranges (default: all columns of the reader).
        out: optional preallocated (D_subset, k) array (e.g. an np.memmap on disk); its dtype wins.
        dtype: dtype of the result when ``out`` is None (float32; float64 to normalise afterwards).
        verify: crc-check the streamed files.

    Returns: array (D_subset, k) (or (D_subset,) for 1-D ``coeffs``), computed in float64 and
    stored in the result's dtype; only use it when a D-vector is really needed (export,
    gradient diagnostics).
    """
    c = np.asarray(coeffs, dtype=np.float64)
    one = c.ndim == 1
    c = c[:, None] if one else c
    cols = merge_ranges(list(columns)) if columns is not None else [slice(0, reader.dim)]
    D = sum(r.stop - r.start for r in cols)
    res = out if out is not None else np.empty((D, c.shape[1]), dtype=dtype)
    T = len(gram.steps)
    ref_row = gram.index(gram.ref_step)
    chunk_cols = max(1024, int(chunk_bytes) // (8 * T))
    pos = 0
    for sl, block in reader.iter_column_chunks(chunk_cols, steps=gram.steps.tolist(), columns=cols, verify=verify):
        X = block.astype(np.float64)
        X -= X[ref_row].copy()
        n = sl.stop - sl.start
        res[pos: pos + n] = X.T @ c  # cast to the result's dtype on assignment
        pos += n
    return res[:, 0] if one else res
