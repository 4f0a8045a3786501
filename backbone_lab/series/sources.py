"""Where a checkpoint series comes from, and how one checkpoint's tensors are read piecewise.

A *series* is an ordered list of ``Checkpoint(step, path)``:

* a folder whose entries carry a step in their name — ``step<N>/`` (Pythia's revision names),
  ``checkpoint-<N>/`` (Hugging Face Trainer), ``…step=<N>….ckpt`` (Lightning), ``step<N>.safetensors`` —
  each a Hugging Face model folder or a single weights file;
* a Hugging Face cache folder of one repository (``models--org--name`` with ``refs/step<N>`` and
  ``snapshots/<commit>/``), e.g. what ``huggingface_hub`` downloaded (`hub.fetch_revisions`);
* a list file: YAML (``- {step: 0, path: a/}`` or ``{0: a/, 1000: b/}``) or CSV (``step,path``
  rows, an optional header); relative paths are relative to the list file. Its steps must be
  increasing.

A checkpoint is read with `open_checkpoint` → `TensorSource`: ``tensors`` (name → shape, dtype)
from the headers only, and ``read(name, start, stop, out)``, which fills ``out`` (float32) with the
flat elements [start, stop) of one tensor. Formats:

* safetensors (``model.safetensors``, sharded ``model.safetensors.index.json``): the header is
  validated by the ``safetensors`` library (``safe_open``) and parsed for the offsets (8-byte
  length, JSON, raw little-endian data); elements are read with positioned reads
  (``os.pread``): no memory map, so the page cache is not charged to the process (the peak RSS
  stays O(chunk), as for the trajectory store); F32/F16/BF16/F64 converted to float32;
* torch files (``pytorch_model*.bin`` with or without index, Lightning ``.ckpt``, plain state
  dicts ``.pt``/``.pth``): ``torch.load(weights_only=True, mmap=True)`` (the zip format is memory
  mapped; a legacy non-zip file is loaded whole, a warning says so); a ``state_dict`` entry
  (Lightning) is used when present.

``config.json`` (if any) gives the architecture (``architectures`` / ``model_type``), used to
refuse mixed series. Errors: `SeriesError`, one line naming the checkpoint and the fix.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backbone_lab.trajectory.store import TrajectoryError


class SeriesError(TrajectoryError):
    """A checkpoint series is missing, malformed or inconsistent (one line: the checkpoint, the fix)."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    label: str  # how the user named it (revision / file name / list line)


_STEP_NAME = re.compile(r"(?:^|[^A-Za-z0-9])(?:global_)?step[=_-]?(\d+)|^checkpoint-(\d+)|^step(\d+)", re.IGNORECASE)
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
_TORCH_EXT = (".bin", ".pt", ".pth", ".ckpt")
_LIST_EXT = (".yaml", ".yml", ".csv", ".txt")


def step_of_name(name: str) -> int | None:
    """The step a revision / folder / file name carries (``step1000``, ``checkpoint-1000``, ``epoch=0-step=1000.ckpt``)."""
    m = _STEP_NAME.search(name)
    if not m:
        return None
    return int(next(g for g in m.groups() if g is not None))


def is_series(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a checkpoint series (not a run / trajectory folder)."""
    if str(path).startswith("hub:"):
        return True
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() in _LIST_EXT
    if not p.is_dir() or (p / "manifest.json").exists() or (p / "trajectory").is_dir():
        return False
    if (p / "refs").is_dir() and (p / "snapshots").is_dir():
        return True
    return any(step_of_name(c.name) is not None for c in p.iterdir() if c.is_dir() or c.suffix in (".safetensors", *_TORCH_EXT))


def discover(path: str | os.PathLike) -> list[Checkpoint]:
    """The checkpoints of a series (module doc), sorted by step; duplicates / unsorted lists refused."""
    p = Path(path)
    if not p.exists():
        raise SeriesError(f"{p}: no such series folder or list file; give a folder of step<N>/ checkpoints or a (step, path) list")
    if p.is_file():
        cks = _from_list(p)
    elif (p / "refs").is_dir() and (p / "snapshots").is_dir():
        cks = _from_hf_cache(p)
    else:
        cks = []
        for c in sorted(p.iterdir()):
            s = step_of_name(c.name)
            if s is not None and (c.is_dir() or c.suffix in (".safetensors", *_TORCH_EXT)):
                cks.append(Checkpoint(s, c, c.name))
        cks.sort(key=lambda c: c.step)
    if not cks:
        raise SeriesError(f"{p}: no checkpoints found (expected step<N>/ subfolders, step-named weight files, or a list file)")
    return check_series(cks, str(p))


def check_series(cks: list[Checkpoint], where: str) -> list[Checkpoint]:
    """The checkpoints unchanged, after checking: increasing steps, no step twice, at least 3."""
    seen: dict[int, Checkpoint] = {}
    for c in cks:
        if c.step in seen:
            raise SeriesError(f"{c.label}: step {c.step} appears twice (also {seen[c.step].label}); keep one checkpoint per step")
        seen[c.step] = c
    for a, b in zip(cks, cks[1:]):
        if b.step < a.step:
            raise SeriesError(f"{where}: step {b.step} ({b.label}) is listed after step {a.step}; list the checkpoints in increasing step order")
    if len(cks) < 3:
        raise SeriesError(f"{where}: only {len(cks)} checkpoint(s); the trajectory analysis needs at least 3")
    return cks


def _from_list(p: Path) -> list[Checkpoint]:
    base = p.parent
    pairs: list[tuple[object, object, str]] = []
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SeriesError(f"{p}: not valid YAML ({str(e).splitlines()[0]}); write a list of {{step, path}}") from None
        if isinstance(data, dict):
            pairs = [(k, v, f"{p.name}: {k}") for k, v in data.items()]
        elif isinstance(data, list):
            for i, item in enumerate(data):
                if not isinstance(item, dict) or "path" not in item:
                    raise SeriesError(f"{p}: entry {i + 1} is {item!r}; each entry needs step and path")
                pairs.append((item.get("step"), item["path"], f"{p.name} entry {i + 1}"))
        else:
            raise SeriesError(f"{p}: expected a list of {{step, path}} or a mapping step: path")
    else:
        with open(p, newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                row = [c.strip() for c in row]
                if not row or not row[0] or row[0].startswith("#"):
                    continue
                if i == 0 and row[0].lower() == "step":
                    continue
                if len(row) < 2:
                    raise SeriesError(f"{p}: line {i + 1} has no path; write 'step,path' per line")
                pairs.append((row[0], row[1], f"{p.name} line {i + 1}"))
    out = []
    for step, path, label in pairs:
        path = Path(str(path)).expanduser()
        path = path if path.is_absolute() else base / path
        if step is None:
            step = step_of_name(path.name)
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise SeriesError(f"{label}: step {step!r} is not an integer; give the optimizer step of each checkpoint") from None
        out.append(Checkpoint(step, path, f"{label} ({path})"))
    return out


def _from_hf_cache(p: Path) -> list[Checkpoint]:
    out = []
    for ref in sorted((p / "refs").iterdir()):
        s = step_of_name(ref.name)
        if s is None:
            continue
        commit = ref.read_text().strip()
        out.append(Checkpoint(s, p / "snapshots" / commit, f"revision {ref.name} ({commit[:10]})"))
    return sorted(out, key=lambda c: c.step)


# ---------------------------------------------------------------------------------- readers
_ST_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "F64": ("<f8", 8)}


class SafetensorsFile:
    """Header + positioned reads of one ``.safetensors`` file."""

    def __init__(self, path: Path, label: str):
        self.path, self.label = path, label
        from safetensors import safe_open

        try:  # the format's own validation of the header (offsets, dtypes, sizes), no data read
            with safe_open(str(path), framework="numpy") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError
            raise SeriesError(f"{label}: {path.name} is not a valid safetensors file ({str(e).splitlines()[0]}); "
                              "download the checkpoint again") from None
        try:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if n <= 0 or n > 100 << 20:
                    raise ValueError("bad header length")
                header = json.loads(f.read(n))
        except (OSError, ValueError) as e:
            raise SeriesError(f"{label}: {path.name} is not a readable safetensors file ({e}); download the checkpoint again") from None
        header.pop("__metadata__", None)
        self.base = 8 + n
        self.entries = header
        end = self.base + max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        if path.stat().st_size < end:
            raise SeriesError(f"{label}: {path.name} is truncated ({path.stat().st_size} of {end} bytes); download the checkpoint again")
        self._fd: int | None = None
        self._scratch = bytearray(0)

    @property
    def tensors(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {k: (tuple(v["shape"]), v["dtype"]) for k, v in self.entries.items()}

    def read(self, name: str, start: int, stop: int, out: np.ndarray) -> None:
        e = self.entries[name]
        if e["dtype"] not in _ST_DTYPES:
            raise SeriesError(f"{self.label}: tensor {name} has dtype {e['dtype']}; only float tensors can be in the trunk")
        code, size = _ST_DTYPES[e["dtype"]]
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        nbytes = (stop - start) * size
        pos = self.base + e["data_offsets"][0] + start * size
        direct = e["dtype"] == "F32" and out.flags.c_contiguous
        if direct:  # read straight into the caller's float32 block (no copy)
            view = memoryview(out).cast("B")
        else:  # a scratch buffer, grown once (O(chunk))
            if len(self._scratch) < nbytes:
                self._scratch = bytearray(nbytes)
            view = memoryview(self._scratch)[:nbytes]
        got = 0
        while got < nbytes:
            k = os.preadv(self._fd, [view[got:]], pos + got)
            if k <= 0:
                raise SeriesError(f"{self.label}: {self.path.name} ends early (tensor {name}); download the checkpoint again")
            got += k
        if direct:
            return
        raw = np.frombuffer(view, dtype=code)
        if e["dtype"] == "BF16":
            np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
        else:
            np.copyto(out, raw, casting="unsafe")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._scratch = bytearray(0)


class TorchFile:
    """A torch-serialised state dict (``weights_only=True``, memory-mapped when possible)."""

    def __init__(self, path: Path, label: str):
        import torch

        self.path, self.label = path, label
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zip" not in str(e):
                raise SeriesError(f"{label}: {path.name} cannot be read ({str(e).splitlines()[0]}); re-save it with torch.save") from None
            warnings.warn(f"{label}: {path.name} is a legacy (non-zip) torch file; it is loaded whole", stacklevel=2)
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - unpickling errors of weights_only
            raise SeriesError(f"{label}: {path.name} cannot be read with weights_only=True ({str(e).splitlines()[0]}); "
                              "save a plain state dict") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise SeriesError(f"{label}: {path.name} holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
        self.sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}

    @property
    def tensors(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in self.sd.items()}

    def read(self, name: str, start: int, stop: int, out: np.ndarray) -> None:
        import torch

        t = self.sd[name]
        if not t.is_floating_point():
            raise SeriesError(f"{self.label}: tensor {name} has dtype {t.dtype}; only float tensors can be in the trunk")
        out[...] = t.reshape(-1)[start:stop].to(torch.float32).numpy()

    def close(self) -> None:
        self.sd = {}


class TensorSource:
    """One checkpoint: the union of its weight files (shards), with the architecture from config.json."""

    def __init__(self, ck: Checkpoint):
        self.ck = ck
        self.files: list = []
        self.where: dict[str, object] = {}
        self.arch: str | None = None
        p = ck.path
        if not p.exists():
            raise SeriesError(f"{ck.label}: {p} does not exist; download the missing revision (or drop it from the list)")
        if p.is_dir():
            cfg = p / "config.json"
            if cfg.exists():
                try:
                    c = json.loads(cfg.read_text())
                    self.arch = ",".join(c.get("architectures") or []) or c.get("model_type")
                except (OSError, ValueError):
                    raise SeriesError(f"{ck.label}: {cfg} is not valid JSON; download the checkpoint again") from None
            files = self._weight_files(p)
        else:
            files = [p]
        for f in files:
            if not f.exists():
                raise SeriesError(f"{ck.label}: shard {f.name} listed in the index is missing; download the revision again")
            src = SafetensorsFile(f, ck.label) if f.suffix == ".safetensors" else TorchFile(f, ck.label)
            self.files.append(src)
            for name in src.tensors:
                self.where[name] = src

    def _weight_files(self, p: Path) -> list[Path]:
        for fname in WEIGHT_FILES:
            f = p / fname
            if not f.exists():
                continue
            if fname.endswith(".index.json"):
                try:
                    wm = json.loads(f.read_text())["weight_map"]
                except (OSError, ValueError, KeyError):
                    raise SeriesError(f"{self.ck.label}: {fname} has no weight_map; download the checkpoint again") from None
                return [p / s for s in sorted(set(wm.values()))]
            return [f]
        shards = sorted(p.glob("*.safetensors")) or sorted(f for f in p.iterdir() if f.suffix in _TORCH_EXT)
        if not shards:
            raise SeriesError(f"{self.ck.label}: {p} has no weights (model.safetensors, pytorch_model.bin or an index); "
                              "download the revision again")
        return shards

    @property
    def tensors(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {n: s.tensors[n] for n, s in self.where.items()}

    def read(self, name: str, start: int, stop: int, out: np.ndarray) -> None:
        self.where[name].read(name, start, stop, out)

    def close(self) -> None:
        for f in self.files:
            f.close()


def open_checkpoint(ck: Checkpoint) -> TensorSource:
    return TensorSource(ck)
