"""On-disk trajectory store: one raw little-endian file per snapshot plus a JSON manifest.

Format (documented in ``docs/TRAJECTORY_FORMAT.md``)::

    trajectory/
      manifest.json
      snap_00000000.bin   all tensors flattened in canonical order, raw little-endian
      snap_00000200.bin
      ...

* ``TrajectoryWriter`` appends snapshots atomically (temp file + ``os.replace``), re-appending an
  identical step is a no-op, a written snapshot is never overwritten.
* ``TrajectoryReader`` streams column blocks ``(T, c)`` of all snapshots without loading whole
  files, verifying each file's crc32 on the fly when a stream covers whole files.

No Lightning / torch import at module level: torch is only touched if a torch tensor is appended.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "backbone_lab.trajectory"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "bfloat16")
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
_NP_STORAGE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}

# Canonical parameter subsets (SPEC §1.3). ``trunk`` = regex R of the reference.
TRUNK_REGEX = r"blocks\.\d+\.(attn\.qkv|attn\.out_proj|mlp\.w_up|mlp\.w_down)\.weight"
_TRUNK_RE = re.compile(rf"^{TRUNK_REGEX}$")


class TrajectoryError(ValueError):
    """A trajectory directory or snapshot is missing, truncated, corrupt or inconsistent.

    The message is one line naming the offending file and the fix.
    """


def snapshot_filename(step: int) -> str:
    return f"snap_{int(step):08d}.bin"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write_arrays(path, [np.frombuffer(data, dtype=np.uint8)])


def _atomic_write_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    """Write arrays back to back into ``path`` atomically, without concatenating them in memory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for a in arrays:
                f.write(memoryview(a).cast("B"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def _to_storage(value: Any, dtype: str) -> np.ndarray:
    """Convert one tensor/array to a flat little-endian array of the storage dtype."""
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


def _shape_of(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in value.shape)


class TrajectoryWriter:
    """Append-only writer of trunk snapshots.

    Args:
        path: the ``trajectory/`` directory (created if missing). An existing manifest is
            re-opened (resume): its dtype/subset/tensors must match.
        tensors: optional canonical layout, a sequence of ``(name, shape)`` pairs or of dicts with
            ``name`` and ``shape``; if None the first ``append`` fixes it.
        dtype: storage dtype, ``float32`` (default), ``float16`` or ``bfloat16`` (raw uint16).
        subset: label of the stored parameter subset (``trunk``, ``blocks_with_ln``, ``full``).
        meta: free-form JSON-serialisable dict stored in the manifest.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tensors: Sequence[Any] | None = None,
        dtype: str = "float32",
        subset: str = "trunk",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise TrajectoryError(f"unknown trajectory dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.subset = subset
        self.meta = dict(meta or {})
        self._tensors: list[dict] | None = None
        self._snapshots: dict[int, dict] = {}
        mpath = self.path / MANIFEST
        if mpath.exists():
            m = _read_manifest(mpath)
            if m["dtype"] != dtype:
                raise TrajectoryError(
                    f"{mpath}: existing trajectory has dtype {m['dtype']}, writer asked for {dtype}; "
                    "use the same dtype or a new directory"
                )
            if m.get("subset") != subset:
                raise TrajectoryError(
                    f"{mpath}: existing trajectory stores subset {m.get('subset')!r}, writer asked for "
                    f"{subset!r}; use the same subset or a new directory"
                )
            self._tensors = m["tensors"]
            self._snapshots = {int(s["step"]): s for s in m["snapshots"]}
            merged = dict(m.get("meta") or {})
            merged.update(self.meta)
            self.meta = merged
        if tensors is not None:
            layout = _layout([(_get(t, "name"), _get(t, "shape")) for t in tensors])
            if self._tensors is not None and _sig(layout) != _sig(self._tensors):
                raise TrajectoryError(
                    f"{mpath}: tensor layout given to the writer differs from the existing manifest; "
                    "use a new trajectory directory"
                )
            self._tensors = layout

    # ------------------------------------------------------------------ properties
    @property
    def steps(self) -> list[int]:
        return sorted(self._snapshots)

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self._tensors or []]

    @property
    def dim(self) -> int:
        return sum(t["numel"] for t in self._tensors or [])

    # ------------------------------------------------------------------ writing
    def append(self, step: int, named_tensors: Mapping[str, Any]) -> bool:
        """Write the snapshot of ``step``; returns True if a new file was written.

        ``named_tensors``: ordered mapping name -> torch tensor (any device/dtype) or numpy array,
        in canonical order. Re-appending an existing step with identical bytes is a no-op
        (returns False); with different bytes the existing file is kept and a warning issued.
        """
        step = int(step)
        if step < 0:
            raise TrajectoryError(f"{self.path}: negative step {step}; steps are optimizer step counts >= 0")
        items = list(named_tensors.items())
        if not items:
            raise TrajectoryError(f"{self.path}: append(step={step}) got no tensors; pass name -> tensor in canonical order")
        layout = _layout([(n, _shape_of(v)) for n, v in items])
        if self._tensors is None:
            self._tensors = layout
        elif _sig(layout) != _sig(self._tensors):
            raise TrajectoryError(_layout_mismatch(self.path, step, self._tensors, layout))

        crc = 0
        nbytes = 0
        arrays: list[np.ndarray] = []
        for _, v in items:
            a = _to_storage(v, self.dtype)  # no copy for contiguous float32 numpy input
            crc = zlib.crc32(memoryview(a).cast("B"), crc)
            nbytes += a.nbytes
            arrays.append(a)
        crc_hex = f"{crc & 0xFFFFFFFF:08x}"
        fname = snapshot_filename(step)
        fpath = self.path / fname

        if step in self._snapshots:
            old = self._snapshots[step]
            if old["crc32"] == crc_hex and int(old["nbytes"]) == nbytes:
                return False
            warnings.warn(
                f"trajectory {self.path}: step {step} already stored with different bytes "
                f"(crc {old['crc32']} vs new {crc_hex}); keeping the existing snapshot",
                stacklevel=2,
            )
            return False
        if fpath.exists():
            # Orphan from a crash between the file write and the manifest update.
            if fpath.stat().st_size == nbytes and _file_crc(fpath) == crc_hex:
                self._register(step, fname, crc_hex, nbytes)
                return False
        _atomic_write_arrays(fpath, arrays)
        self._register(step, fname, crc_hex, nbytes)
        return True

    def _register(self, step: int, fname: str, crc_hex: str, nbytes: int) -> None:
        self._snapshots[step] = {"step": step, "file": fname, "crc32": crc_hex, "nbytes": nbytes}
        self._write_manifest()

    def _write_manifest(self) -> None:
        m = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "dtype": self.dtype,
            "subset": self.subset,
            "tensors": self._tensors,
            "dim": self.dim,
            "snapshots": [self._snapshots[s] for s in sorted(self._snapshots)],
            "meta": self.meta,
        }
        _atomic_write_bytes(self.path / MANIFEST, json.dumps(m, indent=1).encode())


def _get(t: Any, key: str) -> Any:
    if isinstance(t, Mapping):
        return t[key]
    return t[0] if key == "name" else t[1]


def _layout(pairs: Iterable[tuple[str, Sequence[int]]]) -> list[dict]:
    out, off = [], 0
    for name, shape in pairs:
        shape = [int(s) for s in shape]
        numel = int(np.prod(shape)) if shape else 1
        out.append({"name": str(name), "shape": shape, "offset": off, "numel": numel})
        off += numel
    return out


def _sig(layout: list[dict]) -> list[tuple]:
    return [(t["name"], tuple(t["shape"])) for t in layout]


def _layout_mismatch(path: Path, step: int, want: list[dict], got: list[dict]) -> str:
    if len(want) != len(got):
        return (f"{path}: append(step={step}) got {len(got)} tensors, the trajectory stores {len(want)}; "
                "pass the same canonical subset every time")
    for a, b in zip(want, got):
        if a["name"] != b["name"]:
            return (f"{path}: append(step={step}) tensor order/name mismatch: expected {a['name']!r}, got "
                    f"{b['name']!r}; pass tensors in the canonical order")
        if a["shape"] != b["shape"]:
            return (f"{path}: append(step={step}) shape mismatch for {a['name']}: expected {a['shape']}, "
                    f"got {b['shape']}; the model architecture changed, use a new trajectory directory")
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


def _read_manifest(mpath: Path) -> dict:
    if not mpath.exists():
        raise TrajectoryError(
            f"{mpath}: no trajectory manifest; point to a run dir containing trajectory/ or to the trajectory folder itself"
        )
    try:
        m = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrajectoryError(f"{mpath}: unreadable manifest ({e.__class__.__name__}: {e}); restore it from the run or re-dump the trajectory") from None
    if m.get("format") != FORMAT_NAME or int(m.get("version", -1)) != FORMAT_VERSION:
        raise TrajectoryError(
            f"{mpath}: not a {FORMAT_NAME} v{FORMAT_VERSION} manifest (format={m.get('format')!r}, version={m.get('version')!r})"
        )
    for key in ("dtype", "tensors", "snapshots"):
        if key not in m:
            raise TrajectoryError(f"{mpath}: manifest lacks key {key!r}; the file is damaged, re-dump the trajectory")
    if m["dtype"] not in DTYPES:
        raise TrajectoryError(f"{mpath}: unknown dtype {m['dtype']!r} in manifest")
    return m


def resolve_trajectory_dir(path: str | os.PathLike) -> Path:
    """Accept either a run dir (containing ``trajectory/``) or the trajectory folder itself."""
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
    """Read-only access to a trajectory directory.

    Args:
        path: run dir or ``trajectory/`` folder.
        verify: default for crc32 verification while streaming whole files.
        check_files: check on open that every snapshot file exists with the recorded size.

    Attributes: ``steps`` (sorted ints), ``names``, ``shapes``, ``dim``, ``dtype``, ``subset``,
    ``meta``.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True, check_files: bool = True) -> None:
        self.path = resolve_trajectory_dir(path)
        m = _read_manifest(self.path / MANIFEST)
        self.manifest = m
        self.dtype: str = m["dtype"]
        self.subset: str = m.get("subset", "unknown")
        self.meta: dict = m.get("meta") or {}
        self.tensors: list[dict] = m["tensors"]
        self.names: list[str] = [t["name"] for t in self.tensors]
        self.shapes: list[tuple[int, ...]] = [tuple(t["shape"]) for t in self.tensors]
        self.dim: int = int(sum(t["numel"] for t in self.tensors))
        if "dim" in m and int(m["dim"]) != self.dim:
            raise TrajectoryError(f"{self.path / MANIFEST}: dim {m['dim']} != sum of tensor sizes {self.dim}; manifest damaged")
        self._snap = {int(s["step"]): s for s in m["snapshots"]}
        self.steps: list[int] = sorted(self._snap)
        self.verify = verify
        self.itemsize = _ITEMSIZE[self.dtype]
        if check_files:
            for s in self.steps:
                self._check_file(s)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"TrajectoryReader({str(self.path)!r}, T={len(self.steps)}, dim={self.dim}, dtype={self.dtype}, subset={self.subset})"

    # ------------------------------------------------------------------ files
    def file(self, step: int) -> Path:
        if step not in self._snap:
            raise TrajectoryError(f"{self.path}: step {step} not in trajectory (have {len(self.steps)} steps: {self.steps[:3]}...{self.steps[-3:]})")
        return self.path / self._snap[step]["file"]

    def _check_file(self, step: int) -> None:
        f = self.file(step)
        want = int(self._snap[step]["nbytes"])
        if want != self.dim * self.itemsize:
            raise TrajectoryError(f"{f}: manifest nbytes {want} != dim*itemsize {self.dim * self.itemsize}; manifest damaged")
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

    def verify_all(self) -> None:
        """Full crc32 check of every snapshot file (one read of everything)."""
        for s in self.steps:
            self._check_file(s)
            crc = _file_crc(self.file(s))
            if crc != self._snap[s]["crc32"]:
                raise TrajectoryError(self._crc_msg(s, crc))

    def _crc_msg(self, step: int, got: str) -> str:
        return (f"{self.file(step)}: crc32 mismatch for step {step} (manifest {self._snap[step]['crc32']}, file {got}); "
                f"the file is corrupt: re-create it or exclude the step (exclude_steps=[{step}])")

    # ------------------------------------------------------------------ columns
    def columns(self, names: str | Sequence[str]) -> list[slice]:
        """Column ranges (merged, in canonical order) of a tensor-name list or a regex.

        A single string is a regex matched in full against each tensor name.
        """
        if isinstance(names, str):
            rx = re.compile(names)
            sel = [t for t in self.tensors if rx.fullmatch(t["name"])]
        else:
            want = set(names)
            unknown = want - set(self.names)
            if unknown:
                raise TrajectoryError(f"{self.path}: unknown tensor names {sorted(unknown)[:3]}; see reader.names")
            sel = [t for t in self.tensors if t["name"] in want]
        return merge_ranges([slice(t["offset"], t["offset"] + t["numel"]) for t in sel])

    def subset_columns(self, subset: str) -> list[slice]:
        """Column ranges of an analysis subset name (see :func:`subset_regex`)."""
        cols = self.columns(subset_regex(subset))
        if not cols:
            raise TrajectoryError(
                f"{self.path}: subset {subset!r} matches no stored tensor (stored subset {self.subset!r}, e.g. {self.names[:2]}); "
                "pick another subset"
            )
        return cols

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
        self._check_file(step)
        raw = np.fromfile(self.file(step), dtype=_NP_STORAGE[self.dtype])
        if verify if verify is not None else self.verify:
            got = f"{zlib.crc32(raw.tobytes()) & 0xFFFFFFFF:08x}"
            if got != self._snap[step]["crc32"]:
                raise TrajectoryError(self._crc_msg(step, got))
        return self._decode(raw)

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

        Columns are visited in increasing order over ``columns`` (default: all). Each yielded
        block is a fresh array. With ``verify`` and a stream covering whole files (``columns`` =
        all), each file's crc32 is chained over its chunks and checked at the end: a mismatch
        raises ``TrajectoryError``. Files are read with positioned reads into the block (no mmap,
        so the page cache is not charged to the process RSS), never loaded whole. ``prefetch``
        reads (and checksums) the next chunk in a background thread. ``reuse_buffers`` recycles a
        small ring of block buffers instead of allocating each block (steady memory over long
        streams; a yielded block is then only valid until the consumer asks for the next one).
        """
        steps = list(self.steps if steps is None else steps)
        for s in steps:
            self._check_file(s)
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
        crcs = [0] * len(steps)
        files = [open(self.file(s), "rb", buffering=0) for s in steps]
        try:
            for r in ranges:
                for c0 in range(r.start, r.stop, chunk_cols):
                    c1 = min(c0 + chunk_cols, r.stop)
                    n_c = c1 - c0
                    raw = raws[k % ring][: T * n_c].reshape(T, n_c) if ring else np.empty((T, n_c), dtype=sdt)
                    for i, f in enumerate(files):
                        buf = memoryview(raw[i]).cast("B")
                        f.seek(c0 * isz)
                        n = f.readinto(buf)
                        while n < len(buf):  # short reads are legal
                            k = f.readinto(buf[n:])
                            if not k:
                                raise TrajectoryError(
                                    f"{f.name}: snapshot of step {steps[i]} ended early (truncated while reading); re-create it or exclude the step"
                                )
                            n += k
                        if do_verify:
                            crcs[i] = zlib.crc32(buf, crcs[i])
                    out = decs[k % ring][: T * n_c].reshape(T, n_c) if decs else None
                    k += 1
                    yield slice(c0, c1), self._decode(raw, out)
        finally:
            for f in files:
                f.close()
        if do_verify:
            for i, s in enumerate(steps):
                got = f"{crcs[i] & 0xFFFFFFFF:08x}"
                if got != self._snap[s]["crc32"]:
                    raise TrajectoryError(self._crc_msg(s, got))


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


def subset_regex(subset: str) -> str:
    """Regex (full match on tensor names) of an analysis subset name.

    * ``trunk``: the four weight matrices of every block (SPEC §1.3 regex R);
    * ``block{i}``: the trunk tensors of block i;
    * ``block{i}_ln``: all ``blocks.{i}.`` parameters incl. ln1/ln2 (needs a store that has them);
    * ``all`` / ``full``: every stored tensor;
    * anything else is used as a regex verbatim.
    """
    if subset == "trunk":
        return TRUNK_REGEX
    if subset in ("all", "full"):
        return r".*"
    m = re.fullmatch(r"block(\d+)", subset)
    if m:
        return rf"blocks\.{m.group(1)}\.(attn\.qkv|attn\.out_proj|mlp\.w_up|mlp\.w_down)\.weight"
    m = re.fullmatch(r"block(\d+)_ln", subset)
    if m:
        return rf"blocks\.{m.group(1)}\..*"
    return subset


def block_indices(names: Sequence[str]) -> list[int]:
    """Sorted block indices present among tensor names ``blocks.{i}.*``."""
    idx = {int(m.group(1)) for n in names if (m := re.match(r"blocks\.(\d+)\.", n))}
    return sorted(idx)


def resolve_subset(reader: TrajectoryReader, subset: str) -> list[slice]:
    """Subset name -> merged column ranges in ``reader`` (raises TrajectoryError if empty)."""
    return reader.subset_columns(subset)
