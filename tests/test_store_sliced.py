"""Sliced trajectories (one file per snapshot and rank, as DDP/FSDP ranks write them) read like
unsliced ones: same bytes per step, same streams, same analysis (to 1e-12)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from backbone_lab.trajectory import layout as L
from backbone_lab.trajectory.store import TrajectoryError, TrajectoryReader, TrajectoryWriter

LAYOUT = [  # declared roles, as the model writes them; uneven row counts on purpose
    {"name": "blocks.0.norm1.weight", "shape": [8], "block": 0, "trunk": False},
    {"name": "blocks.0.attn.qkv.weight", "shape": [24, 8], "block": 0, "trunk": True},
    {"name": "blocks.0.attn.out_proj.weight", "shape": [8, 8], "block": 0, "trunk": True},
    {"name": "blocks.0.mlp.w_up.weight", "shape": [5, 8], "block": 0, "trunk": True},
    {"name": "blocks.1.attn.qkv.weight", "shape": [24, 8], "block": 1, "trunk": True},
    {"name": "blocks.1.mlp.w_down.weight", "shape": [8, 5], "block": 1, "trunk": True},
    {"name": "scalar_gain", "shape": [], "block": None, "trunk": False},
]
STEPS = [0, 1, 5, 10, 15, 20]


def full_tensors(rng):
    return {t["name"]: rng.standard_normal(t["shape"]).astype(np.float32) for t in LAYOUT}


def local_piece(x: np.ndarray, rank: int, world: int) -> np.ndarray:
    if x.ndim == 0:
        return x if rank == 0 else np.zeros(0, np.float32)
    lo, hi = L.row_range(x.shape[0], rank, world)
    return x[lo:hi]


def write_both(tmp_path, world, dtype="float32", seed=0):
    """The same snapshots written once unsliced and once by `world` ranks."""
    rng = np.random.default_rng(seed)
    plain = TrajectoryWriter(tmp_path / "plain" / "trajectory", tensors=LAYOUT, dtype=dtype)
    ranks = [TrajectoryWriter(tmp_path / "sliced" / "trajectory", tensors=LAYOUT, dtype=dtype,
                              rank=r, world_size=world) for r in range(world)]
    for s in STEPS:
        d = full_tensors(rng)
        plain.append(s, d)
        for r, w in enumerate(ranks):
            w.append(s, {n: local_piece(x, r, world) for n, x in d.items()})
    return tmp_path / "plain", tmp_path / "sliced"


def test_slice_pieces_partition_the_snapshot():
    lay = L.build_layout(LAYOUT)
    dim = sum(t["numel"] for t in lay)
    for world in (1, 2, 3, 7, 30):
        covered = np.zeros(dim, int)
        for r in range(world):
            for a, b in L.slice_pieces(lay, r, world):
                covered[a:b] += 1
        assert (covered == 1).all(), world
    assert L.row_range(5, 0, 2) == (0, 3) and L.row_range(5, 1, 2) == (3, 5)
    assert L.row_range(2, 2, 3) == (2, 2)  # torch.chunk semantics: a rank may hold nothing


@pytest.mark.parametrize("world,dtype", [(2, "float32"), (3, "bfloat16"), (7, "float16")])
def test_sliced_reads_equal_unsliced(tmp_path, world, dtype):
    plain_dir, sliced_dir = write_both(tmp_path, world, dtype)
    a, b = TrajectoryReader(plain_dir), TrajectoryReader(sliced_dir)
    assert b.world_size == world and a.world_size == 1
    assert a.steps == b.steps == STEPS and a.dim == b.dim
    # each rank wrote about 1/W of the bytes
    sizes = [os.path.getsize(f) for f in b.files(5)]
    assert sum(sizes) == os.path.getsize(a.files(5)[0])
    for s in STEPS:
        np.testing.assert_array_equal(a.load(s), b.load(s))
    for chunk in (1, 7, 100, 10_000):
        for cols in (None, b.subset_columns("trunk"), b.subset_columns("block1")):
            ga = np.concatenate([x for _, x in a.iter_column_chunks(chunk, columns=cols)], axis=1)
            gb = np.concatenate([x.copy() for _, x in b.iter_column_chunks(chunk, columns=cols, reuse_buffers=True)], axis=1)
            np.testing.assert_array_equal(ga, gb)
    assert b.blocks == [0, 1] and b.has_non_trunk_block_tensors
    assert json.loads((sliced_dir / "trajectory" / "manifest.json").read_text())["slicing"]["world_size"] == world


def test_sliced_corruption_and_partial_steps(tmp_path):
    _, sliced_dir = write_both(tmp_path, 2)
    d = sliced_dir / "trajectory"
    f = d / "snap_00000010.rank1.bin"
    raw = bytearray(f.read_bytes())
    raw[3] ^= 0xFF
    f.write_bytes(bytes(raw))
    r = TrajectoryReader(sliced_dir)
    with pytest.raises(TrajectoryError, match=r"snap_00000010\.rank1\.bin: crc32 mismatch.*exclude_steps=\[10\]"):
        for _ in r.iter_column_chunks(64):
            pass
    with pytest.raises(TrajectoryError, match="crc32 mismatch"):
        r.load(10)
    # a step only one rank finished (killed mid-snapshot) is left out with a warning
    index = json.loads((d / "snapshots.rank1.json").read_text())
    index["snapshots"] = [s for s in index["snapshots"] if s["step"] != 20]
    (d / "snapshots.rank1.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match=r"steps \[20\] are missing some rank's slice"):
        assert TrajectoryReader(sliced_dir).steps == STEPS[:-1]


def test_sliced_writer_resumes_and_refuses_other_world_size(tmp_path):
    _, sliced_dir = write_both(tmp_path, 2)
    d = sliced_dir / "trajectory"
    w = TrajectoryWriter(d, tensors=LAYOUT, rank=1, world_size=2)
    assert w.steps == STEPS
    rng = np.random.default_rng(0)  # same draws as write_both: re-appending step 0 is a no-op
    assert w.append(0, {n: local_piece(x, 1, 2) for n, x in full_tensors(rng).items()}) is False
    with pytest.raises(TrajectoryError, match="written by 2 rank"):
        TrajectoryWriter(d, tensors=LAYOUT, rank=0, world_size=3)
    with pytest.raises(TrajectoryError, match="shape mismatch"):
        w.append(25, full_tensors(rng))  # full tensors instead of rank 1's slice
    assert not [p for p in os.listdir(d) if p.endswith(".tmp")]


def test_sliced_trajectory_analyses_to_the_same_numbers(tmp_path):
    """Issue #8 (d): the Gram is a sum over parameter slices -> identical analysis."""
    from backbone_lab.analysis.config import AnalysisConfig
    from backbone_lab.analysis.run_analysis import run_analysis

    rng = np.random.default_rng(3)
    steps = [0, 1] + list(range(200, 4001, 200))
    lay = L.build_layout(LAYOUT)
    dim = sum(t["numel"] for t in lay)
    v = rng.standard_normal(dim)
    v /= np.linalg.norm(v)
    th, walk = rng.standard_normal(dim) * 0.02, np.zeros(dim)
    plain = TrajectoryWriter(tmp_path / "plain" / "trajectory", tensors=LAYOUT)
    ranks = [TrajectoryWriter(tmp_path / "sliced" / "trajectory", tensors=LAYOUT, rank=r, world_size=3) for r in range(3)]
    for s in steps:
        walk += rng.standard_normal(dim) * 0.02
        flat = (th + (s / 1000) ** 1.5 * v + walk).astype(np.float32)
        named = {t["name"]: flat[t["offset"]: t["offset"] + t["numel"]].reshape(t["shape"]) for t in lay}
        plain.append(s, named)
        for r, w in enumerate(ranks):
            w.append(s, {n: local_piece(x, r, 3) for n, x in named.items()})
    cfg = dict(anchor_step=1, rolling_window=5, corr_bootstrap=20, figures=False)
    a = run_analysis(tmp_path / "plain", AnalysisConfig(**cfg))
    b = run_analysis(tmp_path / "sliced", AnalysisConfig(**cfg))

    def numbers(x, prefix=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from numbers(v, f"{prefix}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                yield from numbers(v, f"{prefix}[{i}]")
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            yield prefix, float(x)

    timing = ("seconds", "elapsed")
    na = {k: v for k, v in numbers(a) if not any(t in k for t in timing)}
    nb = {k: v for k, v in numbers(b) if not any(t in k for t in timing)}
    assert na.keys() == nb.keys() and len(na) > 50
    for k in na:
        assert na[k] == pytest.approx(nb[k], rel=1e-12, abs=1e-12, nan_ok=True), k
