"""On-disk trajectory store: raw little-endian snapshot files plus a JSON manifest.

Format (documented in ``docs/TRAJECTORY_FORMAT.md``)::

    trajectory/
      manifest.json            layout (names, shapes, offsets, roles), dtype, slicing, meta
      snap_00000000.bin        one process: all tensors flattened in canonical order
      snap_00000200.bin
      ...
    or, written by W ranks in parallel (each rank its 1/W row slice of every tensor):
      snapshots.rank0.json ... snapshots.rank{W-1}.json   each rank's own list of durable files
      snap_00000200.rank0.bin ... snap_00000200.rank{W-1}.bin

* ``TrajectoryWriter`` appends snapshots atomically (``backbone_lab.durable``: temp file in the
  same folder, fsync, ``os.replace``); re-appending an identical step is a no-op and a written
  snapshot is never overwritten. A sliced writer (``world_size > 1``) writes only its rank's
  pieces (``layout.slice_pieces``) and its own index file, so no rank waits for another.
* ``TrajectoryReader`` streams column blocks ``(T, c)`` of all snapshots without loading whole
  files, sliced or not (a step is complete when every rank lists it), verifying each file's
  crc32 on the fly when a stream covers whole files.

* ``encode`` (host conversion + crc) and ``write`` (the durable file) are separate so a background
  thread can do the second (``trajectory.background_writer``); while it has snapshots in flight,
  opening a reader of that folder in the same process waits for them (``register_pending``).

No Lightning / torch import at module level: torch is only touched if a torch tensor is appended.
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backbone_lab.errors import user_facing
from backbone_lab.durable import atomic_write, atomic_write_json, ensure_free_space
from backbone_lab.trajectory import layout as L

FORMAT_NAME = "backbone_lab.trajectory"
FORMAT_VERSION = 1          # one file per snapshot (world size 1)
SLICED_FORMAT_VERSION = 2   # one file per snapshot and rank
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "bfloat16")
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
_NP_STORAGE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}


@user_facing
class TrajectoryError(ValueError):
    """A trajectory directory or snapshot is missing, truncated, corrupt or inconsistent.

    The message is one line naming the offending file and the fix.
    """


def snapshot_filename(step: int, rank: int | None = None) -> str:
    return f"snap_{int(step):08d}.bin" if rank is None else f"snap_{int(step):08d}.rank{int(rank)}.bin"


def rank_index_filename(rank: int) -> str:
    return f"snapshots.rank{int(rank)}.json"


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit pattern (uint16); NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + np.uint32(0x7FFF)
    out = ((u + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit pattern (uint16) -> float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def to_storage(value: Any, dtype: str) -> np.ndarray:
    """One tensor/array as a flat little-endian array of the storage dtype (host memory)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, any device/dtype
        import torch

        t = value.detach()
        if dtype == "bfloat16":
            return t.to(device="cpu", dtype=torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)
        if dtype == "float16":
            return t.to(device="cpu", dtype=torch.float16).contiguous().numpy().reshape(-1).astype("<f2", copy=False)
        return t.to(device="cpu", dtype=torch.float32).contiguous().numpy().reshape(-1).astype("<f4", copy=False)
    arr = np.asarray(value)
    if dtype == "bfloat16":
        return _f32_to_bf16_bits(arr.astype(np.float32, copy=False).reshape(-1))
    return np.ascontiguousarray(arr.reshape(-1), dtype=_NP_STORAGE[dtype])


def _shape_of(value: Any) -> list[int]:
    return [int(s) for s in value.shape]


def crc32_hex(arrays: Sequence[np.ndarray]) -> str:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(memoryview(a).cast("B"), crc)
    return f"{crc & 0xFFFFFFFF:08x}"


class EncodedSnapshot:
    """A snapshot converted to storage arrays in host memory, with its crc32 and size: what the
    (possibly background) writer turns into a file."""

    def __init__(self, step: int, arrays: list[np.ndarray]):
        self.step, self.arrays = int(step), arrays
        self.crc32 = crc32_hex(arrays)
        self.nbytes = int(sum(a.nbytes for a in arrays))


class TrajectoryWriter:
    """Append-only writer of trunk snapshots.

    Args:
        path: the ``trajectory/`` directory (created if missing). An existing trajectory is
            re-opened (resume): its dtype, subset, layout and world size must match.
        tensors: the layout, a sequence of ``(name, shape)`` pairs or of dicts with ``name``,
            ``shape`` and optionally the roles ``block`` (int or None) and ``trunk`` (bool) that the
            model declares (``GPT.snapshot_tensors``); if None the first ``append`` fixes it
            (roles by ``layout.default_roles``). Required when ``world_size > 1``.
        dtype: storage dtype, ``float32`` (default), ``float16`` or ``bfloat16`` (raw uint16).
        subset: label of the stored parameter subset (``trunk``, ``blocks_with_ln``, ``full``).
        meta: free-form JSON-serialisable dict stored in the manifest.
        rank, world_size: with ``world_size > 1`` this writer stores only rank ``rank``'s row slice
            of every tensor (``layout.slice_pieces``); ``append`` then takes the local pieces.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tensors: Sequence[Any] | None = None,
        dtype: str = "float32",
        subset: str = "trunk",
        meta: Mapping[str, Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dtype not in DTYPES:
            raise TrajectoryError(f"unknown trajectory dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        if not 0 <= rank < world_size:
            raise TrajectoryError(f"rank {rank} outside world size {world_size}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dtype, self.subset = dtype, subset
        self.rank, self.world_size = int(rank), int(world_size)
        self.meta = dict(meta or {})
        self._tensors: list[dict] | None = L.build_layout(tensors) if tensors is not None else None
        self._snapshots: dict[int, dict] = {}
        if self.sliced and self._tensors is None:
            raise TrajectoryError(f"{self.path}: a sliced writer (world_size={world_size}) needs the full tensor layout")
        mpath = self.path / MANIFEST
        if mpath.exists():
            self._reopen(_read_manifest(mpath))
        if self.sliced:
            ipath = self.path / rank_index_filename(self.rank)
            if ipath.exists():
                self._snapshots = {int(s["step"]): s for s in _read_json(ipath)["snapshots"]}
            if self.rank == 0:
                self._write_manifest()
        self._expected_local = None if self._tensors is None else self._local_shapes()

    def _reopen(self, m: dict) -> None:
        mpath = self.path / MANIFEST
        if m["dtype"] != self.dtype:
            raise TrajectoryError(f"{mpath}: existing trajectory has dtype {m['dtype']}, writer asked for {self.dtype}; "
                                  "use the same dtype or a new directory")
        if m.get("subset") != self.subset:
            raise TrajectoryError(f"{mpath}: existing trajectory stores subset {m.get('subset')!r}, writer asked for "
                                  f"{self.subset!r}; use the same subset or a new directory")
        stored_w = int(m.get("slicing", {}).get("world_size", 1))
        if stored_w != self.world_size:
            raise TrajectoryError(f"{mpath}: existing trajectory was written by {stored_w} rank(s), this writer is one of "
                                  f"{self.world_size}; resume with the same world size or use a new directory")
        stored = L.with_roles(m["tensors"])
        if self._tensors is not None and L.signature(self._tensors) != L.signature(stored):
            raise TrajectoryError(f"{mpath}: tensor layout given to the writer differs from the existing manifest; "
                                  "use a new trajectory directory")
        self._tensors = self._tensors or stored
        if not self.sliced:
            self._snapshots = {int(s["step"]): s for s in m["snapshots"]}
        self.meta = {**(m.get("meta") or {}), **self.meta}

    # ------------------------------------------------------------------ properties
    @property
    def sliced(self) -> bool:
        return self.world_size > 1

    @property
    def steps(self) -> list[int]:
        return sorted(self._snapshots)

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self._tensors or []]

    @property
    def dim(self) -> int:
        return sum(t["numel"] for t in self._tensors or [])

    def _local_shapes(self) -> list[list[int]]:
        return [L.local_shape(t, self.rank, self.world_size) if self.sliced else t["shape"] for t in self._tensors]

    # ------------------------------------------------------------------ writing
    def encode(self, step: int, named_tensors: Mapping[str, Any]) -> EncodedSnapshot:
        """Check names/shapes and convert to storage arrays in host memory (the part of a write
        that must happen before the weights change again)."""
        step = int(step)
        if step < 0:
            raise TrajectoryError(f"{self.path}: negative step {step}; steps are optimizer step counts >= 0")
        items = list(named_tensors.items())
        if not items:
            raise TrajectoryError(f"{self.path}: append(step={step}) got no tensors; pass name -> tensor in canonical order")
        if self._tensors is None:
            self._tensors = L.build_layout([(n, _shape_of(v)) for n, v in items])
            self._expected_local = self._local_shapes()
        got = [(n, _shape_of(v)) for n, v in items]
        want = list(zip(self.names, self._expected_local))
        if got != want:
            raise TrajectoryError(_layout_mismatch(self.path, step, want, got))
        return EncodedSnapshot(step, [to_storage(v, self.dtype) for _, v in items])

    def append(self, step: int, named_tensors: Mapping[str, Any]) -> bool:
        """Write the snapshot of ``step``; returns True if a new file was written.

        ``named_tensors``: ordered mapping name -> torch tensor (any device/dtype) or numpy array,
        in canonical order (a sliced writer: this rank's row slice of each tensor). Re-appending
        an existing step with identical bytes is a no-op (returns False); with different bytes
        the existing file is kept and a warning issued.
        """
        return self.write(self.encode(step, named_tensors))

    def write(self, snap: EncodedSnapshot) -> bool:
        """Make an encoded snapshot durable and record it (the part a background thread may do)."""
        step = snap.step
        fname = snapshot_filename(step, self.rank if self.sliced else None)
        fpath = self.path / fname
        if step in self._snapshots:
            old = self._snapshots[step]
            if old["crc32"] == snap.crc32 and int(old["nbytes"]) == snap.nbytes:
                return False
            warnings.warn(
                f"trajectory {self.path}: step {step} already stored with different bytes "
                f"(crc {old['crc32']} vs new {snap.crc32}); keeping the existing snapshot",
                stacklevel=2,
            )
            return False
        if fpath.exists() and fpath.stat().st_size == snap.nbytes and _file_crc(fpath) == snap.crc32:
            self._register(step, fname, snap)  # orphan of a crash between file and index update
            return False
        ensure_free_space(self.path, snap.nbytes, f"the snapshot of step {step}")
        atomic_write(fpath, snap.arrays)
        self._register(step, fname, snap)
        return True

    def _register(self, step: int, fname: str, snap: EncodedSnapshot) -> None:
        self._snapshots[step] = {"step": step, "file": fname, "crc32": snap.crc32, "nbytes": snap.nbytes}
        if self.sliced:
            atomic_write_json(self.path / rank_index_filename(self.rank), {
                "format": FORMAT_NAME, "rank": self.rank, "world_size": self.world_size, "dtype": self.dtype,
                "snapshots": [self._snapshots[s] for s in sorted(self._snapshots)]})
        else:
            self._write_manifest()

    def _write_manifest(self) -> None:
        m = {
            "format": FORMAT_NAME,
            "version": SLICED_FORMAT_VERSION if self.sliced else FORMAT_VERSION,
            "dtype": self.dtype,
            "subset": self.subset,
            "tensors": self._tensors,
            "dim": self.dim,
        }
        if self.sliced:
            m["slicing"] = {"world_size": self.world_size, "rule": "dim0_chunks",
                            "pieces": [L.slice_pieces(self._tensors, r, self.world_size) for r in range(self.world_size)]}
        else:
            m["snapshots"] = [self._snapshots[s] for s in sorted(self._snapshots)]
        m["meta"] = self.meta
        atomic_write_json(self.path / MANIFEST, m)


def _layout_mismatch(path: Path, step: int, want: list[tuple], got: list[tuple]) -> str:
    if len(want) != len(got):
        return (f"{path}: append(step={step}) got {len(got)} tensors, the trajectory stores {len(want)}; "
                "pass the same canonical subset every time")
    for (wn, ws), (gn, gs) in zip(want, got):
        if wn != gn:
            return (f"{path}: append(step={step}) tensor order/name mismatch: expected {wn!r}, got "
                    f"{gn!r}; pass tensors in the canonical order")
        if ws != gs:
            return (f"{path}: append(step={step}) shape mismatch for {wn}: expected {ws}, "
                    f"got {gs}; the model architecture (or world size) changed, use a new trajectory directory")
    return f"{path}: append(step={step}) tensor layout mismatch"


def _file_crc(path: Path, bufsize: int = 1 << 24) -> str:
    crc = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            crc = zlib.crc32(b, crc)
    return f"{crc & 0xFFFFFFFF:08x}"


def _read_json(path: Path, what: str = "index") -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrajectoryError(f"{path}: unreadable {what} ({e.__class__.__name__}: {e}); "
                              "restore it from the run or re-dump the trajectory") from None


def _read_manifest(mpath: Path) -> dict:
    if not mpath.exists():
        raise TrajectoryError(
            f"{mpath}: no trajectory manifest; point to a run dir containing trajectory/ or to the trajectory folder itself"
        )
    m = _read_json(mpath, "manifest")
    if m.get("format") != FORMAT_NAME or int(m.get("version", -1)) not in (FORMAT_VERSION, SLICED_FORMAT_VERSION):
        raise TrajectoryError(
            f"{mpath}: not a {FORMAT_NAME} v{FORMAT_VERSION}/v{SLICED_FORMAT_VERSION} manifest "
            f"(format={m.get('format')!r}, version={m.get('version')!r})"
        )
    for key in ("dtype", "tensors") + (("snapshots",) if "slicing" not in m else ()):
        if key not in m:
            raise TrajectoryError(f"{mpath}: manifest lacks key {key!r}; the file is damaged, re-dump the trajectory")
    if m["dtype"] not in DTYPES:
        raise TrajectoryError(f"{mpath}: unknown dtype {m['dtype']!r} in manifest")
    return m


# Trajectory folders with snapshots still in flight in this process (a background writer,
# `trajectory.background_writer`): resolved path -> the flush functions of their writers.
_PENDING: dict[str, list] = {}
_PENDING_LOCK = threading.Lock()


def register_pending(path: str | os.PathLike, flush) -> None:
    """Make readers of `path` in this process call `flush()` (wait for the pending snapshots) first."""
    with _PENDING_LOCK:
        _PENDING.setdefault(os.path.realpath(path), []).append(flush)


def unregister_pending(path: str | os.PathLike, flush) -> None:
    with _PENDING_LOCK:
        flushes = _PENDING.get(os.path.realpath(path), [])
        if flush in flushes:
            flushes.remove(flush)
        if not flushes:
            _PENDING.pop(os.path.realpath(path), None)


def wait_for_pending(path: str | os.PathLike) -> None:
    """Flush the background writers of this process writing `path` or `path/trajectory`."""
    with _PENDING_LOCK:
        flushes = [f for p in (Path(path), Path(path) / "trajectory") for f in _PENDING.get(os.path.realpath(p), [])]
    for flush in flushes:
        flush()


def resolve_trajectory_dir(path: str | os.PathLike) -> Path:
    """Accept either a run dir (containing ``trajectory/``) or the trajectory folder itself
    (after the snapshots this process still has in flight there are written)."""
    if _PENDING:
        wait_for_pending(path)
    p = Path(path)
    if (p / MANIFEST).exists():
        return p
    if (p / "trajectory" / MANIFEST).exists():
        return p / "trajectory"
    if not p.exists():
        raise TrajectoryError(f"{p}: directory does not exist; pass a run dir or a trajectory folder")
    raise TrajectoryError(
        f"{p}: no trajectory found (neither {p / MANIFEST} nor {p / 'trajectory' / MANIFEST}); "
        "pass a run dir with a trajectory/ folder or the trajectory folder itself"
    )


class TrajectoryReader:
    """Read-only access to a trajectory directory (one file per snapshot, or one per rank).

    Args:
        path: run dir or ``trajectory/`` folder.
        verify: default for crc32 verification while streaming whole files.
        check_files: check on open that every snapshot file exists with the recorded size.

    Attributes: ``steps`` (sorted ints), ``names``, ``shapes``, ``dim``, ``dtype``, ``subset``,
    ``meta``, ``tensors`` (layout with roles), ``world_size``, ``blocks`` (trunk block indices).
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True, check_files: bool = True) -> None:
        self.path = resolve_trajectory_dir(path)
        m = _read_manifest(self.path / MANIFEST)
        self.manifest = m
        self.dtype: str = m["dtype"]
        self.subset: str = m.get("subset", "unknown")
        self.meta: dict = m.get("meta") or {}
        self.tensors: list[dict] = L.with_roles(m["tensors"])
        self.names: list[str] = [t["name"] for t in self.tensors]
        self.shapes: list[tuple[int, ...]] = [tuple(t["shape"]) for t in self.tensors]
        self.dim: int = int(sum(t["numel"] for t in self.tensors))
        if "dim" in m and int(m["dim"]) != self.dim:
            raise TrajectoryError(f"{self.path / MANIFEST}: dim {m['dim']} != sum of tensor sizes {self.dim}; manifest damaged")
        self.world_size = int(m.get("slicing", {}).get("world_size", 1))
        self.itemsize = _ITEMSIZE[self.dtype]
        self._segments = L.segments(self.tensors, self.world_size)
        self._part_elems = [sum(b - a for a, b in L.slice_pieces(self.tensors, r, self.world_size))
                            for r in range(self.world_size)]
        self._parts = self._load_parts(m)  # step -> [file entry of rank 0, ..., rank W-1]
        self.steps: list[int] = sorted(self._parts)
        self.verify = verify
        if check_files:
            for s in self.steps:
                self._check_files(s)

    def _load_parts(self, m: dict) -> dict[int, list[dict]]:
        mpath = self.path / MANIFEST
        indexes = sorted(self.path.glob("snapshots.rank*.json"))
        if self.world_size == 1:
            if "snapshots" not in m:
                raise TrajectoryError(f"{mpath}: slicing.world_size is 1 but the snapshots are listed per rank "
                                      f"({len(indexes)} files snapshots.rank*.json): the manifest's slicing.world_size "
                                      f"was changed; restore it to {len(indexes)}")
            return {int(s["step"]): [s] for s in m["snapshots"]}
        pieces = (m.get("slicing") or {}).get("pieces")
        if isinstance(pieces, list) and len(pieces) != self.world_size:
            raise TrajectoryError(f"{mpath}: slicing.world_size is {self.world_size} but slicing.pieces lists "
                                  f"{len(pieces)} ranks: the manifest's slicing.world_size was changed; restore it to "
                                  f"{len(pieces)}")
        per_rank = []
        for r in range(self.world_size):
            ipath = self.path / rank_index_filename(r)
            if not ipath.exists():
                if indexes:
                    raise TrajectoryError(
                        f"{ipath}: rank {r}'s snapshot index is missing (the manifest says {self.world_size} ranks wrote "
                        f"this trajectory; found {', '.join(p.name for p in indexes)}): restore the file from a copy of "
                        "the run; without it no snapshot is complete (exclude_steps cannot help)")
                listed = []
            else:
                index = _read_json(ipath)
                for field, mine in (("world_size", self.world_size), ("dtype", self.dtype)):
                    if field in index and index[field] != mine:
                        raise TrajectoryError(
                            f"{mpath}: the manifest's {'slicing.world_size' if field == 'world_size' else field} is "
                            f"{mine!r} but {ipath.name} (written with the snapshots) says {index[field]!r}: the "
                            f"manifest was changed; restore {field}={index[field]!r}")
                listed = index["snapshots"]
            per_rank.append({int(s["step"]): s for s in listed})
        complete = set.intersection(*(set(d) for d in per_rank))
        partial = set.union(*(set(d) for d in per_rank)) - complete
        if partial:
            warnings.warn(f"{self.path}: steps {sorted(partial)[:5]} are missing some rank's slice (a run killed while "
                          "writing them); they are left out", stacklevel=3)
        return {s: [d[s] for d in per_rank] for s in complete}

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return (f"TrajectoryReader({str(self.path)!r}, T={len(self.steps)}, dim={self.dim}, dtype={self.dtype}, "
                f"subset={self.subset}, world_size={self.world_size})")

    # ------------------------------------------------------------------ roles
    @property
    def blocks(self) -> list[int]:
        """Sorted indices of the blocks holding trunk tensors (declared by the writing model)."""
        return L.trunk_blocks(self.tensors)

    @property
    def has_non_trunk_block_tensors(self) -> bool:
        """Whether the blocks' non-trunk tensors (e.g. their norms) are stored too."""
        return L.has_non_trunk_block_tensors(self.tensors)

    # ------------------------------------------------------------------ files
    def files(self, step: int) -> list[Path]:
        """The file(s) of one snapshot: one, or one per rank for a sliced trajectory."""
        if step not in self._parts:
            raise TrajectoryError(f"{self.path}: step {step} not in trajectory (have {len(self.steps)} steps: {self.steps[:3]}...{self.steps[-3:]})")
        return [self.path / p["file"] for p in self._parts[step]]

    def _check_files(self, step: int) -> None:
        for r, (f, part) in enumerate(zip(self.files(step), self._parts[step])):
            want = int(part["nbytes"])
            if want != self._part_elems[r] * self.itemsize:
                raise TrajectoryError(self._nbytes_msg(step, r, f, want))
            try:
                size = f.stat().st_size
            except FileNotFoundError:
                raise TrajectoryError(
                    f"{f}: snapshot file of step {step} is missing; restore it or exclude the step (analysis: exclude_steps=[{step}])"
                ) from None
            if size != want:
                raise TrajectoryError(
                    f"{f}: snapshot of step {step} is truncated/corrupt ({size} of {want} bytes); re-create it or exclude the step (exclude_steps=[{step}])"
                )

    def _nbytes_msg(self, step: int, rank: int, f: Path, want: int) -> str:
        """Which field lies when a listed nbytes disagrees with the layout: the dtype (every file fits
        another dtype) or that entry's nbytes."""
        expected = self._part_elems[rank] * self.itemsize
        index = self.path / (MANIFEST if self.world_size == 1 else rank_index_filename(rank))
        size = f.stat().st_size if f.exists() else None
        fits = [d for d, n in _ITEMSIZE.items() if d != self.dtype and self._part_elems[rank] * n in (want, size)]
        if fits and size != expected:
            return (f"{self.path / MANIFEST}: dtype is {self.dtype!r} but the snapshot files hold "
                    f"{size if size is not None else want} bytes, what dtype {fits[0]!r} gives: the manifest's dtype "
                    f"field was changed; restore dtype={fits[0]!r}")
        return (f"{index}: the nbytes field of step {step} says {want}, the layout (tensors x {self.dtype}) gives "
                f"{expected}{' and the file holds ' + str(size) if size is not None else ''}: the field was "
                f"changed; restore nbytes={expected}")

    def _crc_msg(self, step: int, rank: int, got: str) -> str:
        return (f"{self.files(step)[rank]}: crc32 mismatch for step {step} (manifest {self._parts[step][rank]['crc32']}, "
                f"file {got}); the file is corrupt: re-create it or exclude the step (exclude_steps=[{step}])")

    # ------------------------------------------------------------------ columns
    def columns(self, names: str | Sequence[str]) -> list[slice]:
        """Column ranges (merged, in canonical order) of a tensor-name list or a regex.

        A single string is a regex matched in full against each tensor name.
        """
        if isinstance(names, str):
            sel = [t for t in self.tensors if re.fullmatch(names, t["name"])]
        else:
            want = set(names)
            unknown = want - set(self.names)
            if unknown:
                raise TrajectoryError(f"{self.path}: unknown tensor names {sorted(unknown)[:3]}; see reader.names")
            sel = [t for t in self.tensors if t["name"] in want]
        return merge_ranges([slice(t["offset"], t["offset"] + t["numel"]) for t in sel])

    def subset_columns(self, subset: str) -> list[slice]:
        """Column ranges of an analysis subset name (`trunk`, `block{i}`, `block{i}_ln`, `all`,
        or a regex; see ``layout.select``)."""
        sel = L.select(self.tensors, subset)
        if not sel:
            raise TrajectoryError(
                f"{self.path}: subset {subset!r} matches no stored tensor (stored subset {self.subset!r}, e.g. {self.names[:2]}); "
                "pick another subset"
            )
        return merge_ranges([slice(t["offset"], t["offset"] + t["numel"]) for t in sel])

    # ------------------------------------------------------------------ loading
    def _decode(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self.dtype == "float32":
            return raw.astype(np.float32, copy=False)
        if out is None:
            return raw.astype(np.float32) if self.dtype == "float16" else bf16_bits_to_f32(raw)
        if self.dtype == "float16":
            np.copyto(out, raw)
        else:
            np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
        return out

    def load(self, step: int, verify: bool | None = None) -> np.ndarray:
        """The whole snapshot of ``step`` as a float32 vector of shape ``(dim,)``."""
        self._check_files(step)
        verify = self.verify if verify is None else verify
        parts = []
        for r, f in enumerate(self.files(step)):
            raw = np.fromfile(f, dtype=_NP_STORAGE[self.dtype])
            if verify:
                got = crc32_hex([raw])
                if got != self._parts[step][r]["crc32"]:
                    raise TrajectoryError(self._crc_msg(step, r, got))
            parts.append(raw)
        if self.world_size == 1:
            return self._decode(parts[0])
        flat = np.empty(self.dim, dtype=_NP_STORAGE[self.dtype])
        for a, b, r, off in self._segments:
            flat[a:b] = parts[r][off: off + b - a]
        return self._decode(flat)

    def load_named(self, step: int) -> dict[str, np.ndarray]:
        """``{name: float32 array of the tensor's shape}`` for one step."""
        flat = self.load(step)
        return {t["name"]: flat[t["offset"]: t["offset"] + t["numel"]].reshape(t["shape"]) for t in self.tensors}

    def iter_column_chunks(
        self,
        chunk_cols: int,
        steps: Sequence[int] | None = None,
        columns: Sequence[slice] | None = None,
        verify: bool | None = None,
        prefetch: bool = False,
        reuse_buffers: bool = False,
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream ``(col_slice, block)`` with ``block`` float32 of shape ``(len(steps), c)``, c <= chunk_cols.

        Columns are visited in increasing order over ``columns`` (default: all), whatever the
        slicing of the files. Each yielded block is a fresh array. With ``verify`` and a stream
        covering whole files (``columns`` = all), each file's crc32 is chained over its chunks
        and checked at the end: a mismatch raises ``TrajectoryError``. Files are read with
        positioned reads into the block (no mmap, so the page cache is not charged to the process
        RSS), never loaded whole. ``prefetch`` reads (and checksums) the next chunk in a
        background thread. ``reuse_buffers`` recycles a small ring of block buffers instead of
        allocating each block (steady memory over long streams; a yielded block is then only
        valid until the consumer asks for the next one).
        """
        steps = list(self.steps if steps is None else steps)
        for s in steps:
            self._check_files(s)
        ranges = merge_ranges(list(columns)) if columns is not None else [slice(0, self.dim)]
        for r in ranges:
            if r.start < 0 or r.stop > self.dim or r.start >= r.stop:
                raise TrajectoryError(f"{self.path}: column range {r} outside [0, {self.dim})")
        do_verify = (self.verify if verify is None else verify) and ranges == [slice(0, self.dim)]
        gen = self._chunks(max(1, int(chunk_cols)), steps, ranges, do_verify, ring=4 if reuse_buffers else 0)
        if not prefetch:
            yield from gen
            return
        yield from _prefetched(gen)

    def _pieces(self, c0: int, c1: int) -> list[tuple[int, int, int, int]]:
        """Segments overlapping columns [c0, c1), clipped: (start, stop, rank, offset in rank file)."""
        out = []
        for a, b, r, off in self._segments:
            if b <= c0 or a >= c1:
                continue
            lo, hi = max(a, c0), min(b, c1)
            out.append((lo, hi, r, off + lo - a))
        return out

    def _chunks(self, chunk_cols: int, steps: list[int], ranges: list[slice], do_verify: bool, ring: int = 0) -> Iterator[tuple[slice, np.ndarray]]:
        isz = self.itemsize
        sdt = _NP_STORAGE[self.dtype]
        T = len(steps)
        width = min(chunk_cols, max(r.stop - r.start for r in ranges))
        # ring of flat buffers (raw storage, and decoded float32 for half dtypes): memory stays
        # flat over long streams instead of depending on the allocator returning freed blocks
        raws = [np.empty(T * width, dtype=sdt) for _ in range(ring)]
        decs = [np.empty(T * width, dtype=np.float32) for _ in range(ring)] if ring and self.dtype != "float32" else []
        k = 0
        crcs = [[0] * self.world_size for _ in steps]
        files = [[open(f, "rb", buffering=0) for f in self.files(s)] for s in steps]
        try:
            for rg in ranges:
                for c0 in range(rg.start, rg.stop, chunk_cols):
                    c1 = min(c0 + chunk_cols, rg.stop)
                    n_c = c1 - c0
                    raw = raws[k % ring][: T * n_c].reshape(T, n_c) if ring else np.empty((T, n_c), dtype=sdt)
                    pieces = self._pieces(c0, c1)
                    for i in range(T):
                        for lo, hi, r, off in pieces:
                            buf = memoryview(raw[i, lo - c0: hi - c0]).cast("B")
                            _read_exact(files[i][r], off * isz, buf, steps[i])
                            if do_verify:
                                crcs[i][r] = zlib.crc32(buf, crcs[i][r])
                    out = decs[k % ring][: T * n_c].reshape(T, n_c) if decs else None
                    k += 1
                    yield slice(c0, c1), self._decode(raw, out)
        finally:
            for fs in files:
                for f in fs:
                    f.close()
        if do_verify:
            for i, s in enumerate(steps):
                for r in range(self.world_size):
                    got = f"{crcs[i][r] & 0xFFFFFFFF:08x}"
                    if got != self._parts[s][r]["crc32"]:
                        raise TrajectoryError(self._crc_msg(s, r, got))


def _read_exact(f, pos: int, buf: memoryview, step: int) -> None:
    f.seek(pos)
    n = f.readinto(buf)
    while n < len(buf):  # short reads are legal
        k = f.readinto(buf[n:])
        if not k:
            raise TrajectoryError(
                f"{f.name}: snapshot of step {step} ended early (truncated while reading); re-create it or exclude the step"
            )
        n += k


_DONE = object()


def _prefetched(gen: Iterator, depth: int = 1) -> Iterator:
    """Run ``gen`` one item ahead in a daemon thread (file reads and zlib release the GIL)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def producer() -> None:
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                q.put((True, _DONE))
        except BaseException as e:  # forwarded to the consumer
            q.put((False, e))
        finally:
            gen.close()

    th = threading.Thread(target=producer, daemon=True, name="trajectory-prefetch")
    th.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except Exception:
                pass
            th.join(timeout=0.05)


def merge_ranges(ranges: Sequence[slice]) -> list[slice]:
    """Sort and merge overlapping/adjacent column ranges."""
    rs = sorted((int(r.start), int(r.stop)) for r in ranges if r.stop > r.start)
    out: list[list[int]] = []
    for a, b in rs:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [slice(a, b) for a, b in out]
