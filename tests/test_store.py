"""Trajectory store: round trip, atomic/idempotent append, dtypes, corrupt/missing files."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from backbone_lab.trajectory.store import (
    TrajectoryError,
    TrajectoryReader,
    TrajectoryWriter,
    bf16_bits_to_f32,
)

LAYOUT = [
    ("blocks.0.ln1.weight", (8,)),
    ("blocks.0.attn.qkv.weight", (24, 8)),
    ("blocks.0.attn.out_proj.weight", (8, 8)),
    ("blocks.0.ln2.weight", (8,)),
    ("blocks.0.mlp.w_up.weight", (32, 8)),
    ("blocks.0.mlp.w_down.weight", (8, 32)),
    ("blocks.1.attn.qkv.weight", (24, 8)),
    ("blocks.1.attn.out_proj.weight", (8, 8)),
    ("blocks.1.mlp.w_up.weight", (32, 8)),
    ("blocks.1.mlp.w_down.weight", (8, 32)),
]


def make_tensors(rng, as_torch=True):
    out = {}
    for n, s in LAYOUT:
        a = rng.standard_normal(s).astype(np.float32)
        out[n] = torch.from_numpy(a) if as_torch else a
    return out


def flat(d):
    return np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1) for v in d.values()])


@pytest.fixture
def traj(tmp_path):
    rng = np.random.default_rng(0)
    w = TrajectoryWriter(tmp_path / "trajectory", meta={"run": "t"})
    snaps = {}
    for s in (0, 1, 5, 10, 15):
        d = make_tensors(rng, as_torch=(s % 2 == 0))
        assert w.append(s, d)
        snaps[s] = flat(d)
    return tmp_path, snaps


def test_round_trip(traj):
    run, snaps = traj
    r = TrajectoryReader(run)  # run dir resolves to run/trajectory
    assert r.steps == [0, 1, 5, 10, 15]
    assert r.names == [n for n, _ in LAYOUT]
    assert r.shapes == [s for _, s in LAYOUT]
    assert r.dim == sum(int(np.prod(s)) for _, s in LAYOUT)
    assert r.meta == {"run": "t"}
    for s, v in snaps.items():
        np.testing.assert_array_equal(r.load(s), v)
    named = r.load_named(5)
    assert named["blocks.0.mlp.w_up.weight"].shape == (32, 8)
    # streaming equals stacked loads, any chunk size, any column subset
    full = np.stack([snaps[s] for s in r.steps])
    for chunk in (1, 7, 100, 10_000):
        got = np.concatenate([b for _, b in r.iter_column_chunks(chunk)], axis=1)
        np.testing.assert_array_equal(got, full)
    cols = r.subset_columns("block1")
    parts = list(r.iter_column_chunks(50, steps=[1, 10], columns=cols))
    idx = np.concatenate([np.arange(sl.start, sl.stop) for sl, _ in parts])
    np.testing.assert_array_equal(np.concatenate([b for _, b in parts], axis=1), full[[1, 3]][:, idx])


def test_subsets(traj):
    run, _ = traj
    r = TrajectoryReader(run / "trajectory")
    trunk = r.subset_columns("trunk")
    n_trunk = sum(sl.stop - sl.start for sl in trunk)
    assert n_trunk == r.dim - 16  # everything but ln1/ln2
    b0 = r.subset_columns("block0")
    b0ln = r.subset_columns("block0_ln")
    assert sum(sl.stop - sl.start for sl in b0ln) == sum(sl.stop - sl.start for sl in b0) + 16
    assert r.columns(["blocks.0.ln1.weight"]) == [slice(0, 8)]
    assert r.columns(r"blocks\.0\.ln\d\.weight") == [slice(0, 8), slice(8 + 192 + 64, 8 + 192 + 64 + 8)]
    with pytest.raises(TrajectoryError, match="matches no stored tensor"):
        r.subset_columns("block7_ln")


def test_idempotent_and_never_overwrite(traj):
    run, snaps = traj
    w = TrajectoryWriter(run / "trajectory")  # resume
    rng = np.random.default_rng(123)
    same = {n: torch.from_numpy(snaps[0][o:o + int(np.prod(s))].reshape(s)) for (n, s), o in zip(LAYOUT, np.cumsum([0] + [int(np.prod(s)) for _, s in LAYOUT]))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert w.append(0, same) is False
    with pytest.warns(UserWarning, match="keeping the existing"):
        assert w.append(0, make_tensors(rng)) is False
    r = TrajectoryReader(run)
    np.testing.assert_array_equal(r.load(0), snaps[0])
    assert not [f for f in os.listdir(run / "trajectory") if f.endswith(".tmp")]


def test_layout_mismatch(tmp_path):
    w = TrajectoryWriter(tmp_path)
    w.append(0, {"a": np.zeros((2, 3)), "b": np.zeros(4)})
    with pytest.raises(TrajectoryError, match="shape mismatch for a"):
        w.append(1, {"a": np.zeros((3, 2)), "b": np.zeros(4)})
    with pytest.raises(TrajectoryError, match="expected 'a', got 'b'"):
        w.append(1, {"b": np.zeros(4), "a": np.zeros((2, 3))})
    with pytest.raises(TrajectoryError, match="got 1 tensors"):
        w.append(1, {"a": np.zeros((2, 3))})
    with pytest.raises(TrajectoryError, match="dtype"):
        TrajectoryWriter(tmp_path, dtype="float16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_storage(tmp_path, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7)).astype(np.float32) * 3
    w = TrajectoryWriter(tmp_path, dtype=dtype)
    w.append(0, {"w": torch.from_numpy(x)})            # torch conversion
    w.append(1, {"w": x})                               # numpy conversion (must round identically)
    w.append(2, {"w": torch.from_numpy(x).to(torch.float64).cuda() if torch.cuda.is_available() else torch.from_numpy(x).double()})
    r = TrajectoryReader(tmp_path)
    tdt = torch.float16 if dtype == "float16" else torch.bfloat16
    want = torch.from_numpy(x).to(tdt).float().numpy().reshape(-1)
    for s in (0, 1, 2):
        np.testing.assert_array_equal(r.load(s), want)
    assert os.path.getsize(tmp_path / "snap_00000000.bin") == x.size * 2
    blocks = np.concatenate([b for _, b in r.iter_column_chunks(4)], axis=1)
    np.testing.assert_array_equal(blocks[0], want)
    assert bf16_bits_to_f32(np.array([0x3F80], dtype=np.uint16))[0] == 1.0


def test_missing_truncated_corrupt(traj):
    run, _ = traj
    d = run / "trajectory"
    # corrupt one byte, same size: detected by crc on load and while streaming
    f5 = d / "snap_00000005.bin"
    b = bytearray(f5.read_bytes())
    b[100] ^= 0xFF
    f5.write_bytes(bytes(b))
    r = TrajectoryReader(run)
    with pytest.raises(TrajectoryError, match=r"snap_00000005\.bin: crc32 mismatch.*exclude_steps=\[5\]"):
        r.load(5)
    with pytest.raises(TrajectoryError, match="crc32 mismatch"):
        for _ in r.iter_column_chunks(64):
            pass
    r.load(5, verify=False)  # explicit opt-out works
    # truncated
    f5.write_bytes(bytes(b[:-4]))
    with pytest.raises(TrajectoryError, match=r"snap_00000005\.bin: snapshot of step 5 is truncated"):
        TrajectoryReader(run)
    # missing
    os.remove(f5)
    with pytest.raises(TrajectoryError, match=r"snap_00000005\.bin: snapshot file of step 5 is missing") as e:
        TrajectoryReader(run)
    assert "\n" not in str(e.value)
    # missing dir / manifest
    with pytest.raises(TrajectoryError, match="does not exist"):
        TrajectoryReader(run / "nope")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(TrajectoryError, match="unreadable manifest"):
        TrajectoryReader(run)


def test_orphan_file_is_registered(tmp_path):
    w = TrajectoryWriter(tmp_path)
    x = {"w": np.arange(6, dtype=np.float32)}
    w.append(0, x)
    # simulate a crash after the file write but before the manifest update
    m = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "snap_00000003.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    w2 = TrajectoryWriter(tmp_path)
    assert w2.append(3, x) is False  # identical orphan adopted, not rewritten
    assert TrajectoryReader(tmp_path).steps == [0, 3]
    assert m["snapshots"][0]["crc32"] == TrajectoryReader(tmp_path).manifest["snapshots"][0]["crc32"]
