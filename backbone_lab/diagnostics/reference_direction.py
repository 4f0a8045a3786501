"""Reference directions for the diagnostics: the backbone v_b, PC2 and switching directions.

Sources (PAPER_MAP §5.0, §5.1, §5.4, §5.12):

* **rolling** — online estimate from the last W stored snapshots θ(s_0..s_{W−1}) (W−1 drift rows
  re-anchored at the window's first snapshot, x_i = θ(s_i) − θ(s_0)), row-normalised by default,
  uncentered PC1 through the small (W−1)×(W−1) Gram matrix (float64), as in §5.4;
* **global** — every stored snapshot after an anchor (θ(1) in the paper, §5.1 / §5.10), raw or
  row-normalised;
* **file** — a fixed v_b written by another run's analysis (`.npy` (D,), `.npz` / `.pt`).

Sign convention (W9): v_b is flipped so that the latest drift row has a positive projection,
⟨x_last, v_b⟩ > 0. PC2 gets the same rule (its sign carries no meaning).

Snapshots are streamed column-chunk-wise from a `TrajectoryReader` twice (Gram, then
reconstruction v = Σ_i u_i x̂_i / σ) with the analysis' Gram / PCA functions, so memory is
O(W × chunk), never W × D.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backbone_lab.run_dir import RunDir

_FLOOR = 1e-12
_CACHE: OrderedDict = OrderedDict()  # (path, steps, anchor, row_norm, k) -> ReferenceDirections
_CACHE_SIZE = 4


@dataclass
class ReferenceDirections:
    """Unit directions in the store's (= canonical trunk) coordinates, float32 numpy (D,)."""

    backbone: np.ndarray
    pcs: list[np.ndarray] = field(default_factory=list)  # [v_1 (= backbone), v_2, ...]
    explained: np.ndarray | None = None  # ρ_k = σ_k² / Σ σ_j² over all rows
    steps: list[int] = field(default_factory=list)  # snapshot steps of the drift rows
    anchor_step: int | None = None
    source: str = ""

    @property
    def pc2(self) -> np.ndarray | None:
        return self.pcs[1] if len(self.pcs) > 1 else None

    @property
    def latest_step(self) -> int | None:
        return self.steps[-1] if self.steps else None


def _open_reader(path):
    from backbone_lab.trajectory.store import TrajectoryReader

    return TrajectoryReader(path, verify=False)


def backbone_from_trajectory(
    reader,
    steps: Sequence[int],
    anchor_step: int,
    row_normalise: bool = True,
    n_components: int = 2,
    chunk_cols: int = 1 << 21,
    use_cache: bool = True,
) -> ReferenceDirections:
    """Uncentered PCA of the drift rows θ(s) − θ(anchor), s in `steps`, via their Gram matrix.

    The analysis' own functions (``analysis.gram.stream_grams`` for the float64 Gram,
    ``analysis.pca.pca_rows`` for the spectrum, ``analysis.gram.reconstruct_directions`` for the
    D-vectors), so the diagnostics' v_b is the analysis' v_b. Explained fractions over all rows.

    Args:
        reader: a `TrajectoryReader`; only its trunk columns are used (the coordinates of the
            diagnostics' gradients), whatever else the store holds (e.g. `blocks_with_ln`).
        steps: snapshot steps of the drift rows (the anchor excluded), ascending.
        anchor_step: the reference snapshot.
        row_normalise: divide each drift row by its norm (floor 1e-12) first (§5.0).
        n_components: how many right singular vectors to rebuild (1 = backbone only).
        chunk_cols: columns per streamed block.
    """
    from backbone_lab.analysis.gram import coeff_rows, reconstruct_directions, stream_grams
    from backbone_lab.analysis.pca import pca_rows

    steps = [int(s) for s in steps if int(s) != int(anchor_step)]
    if not steps:
        raise ValueError("backbone_from_trajectory: need at least one drift row")
    key = (str(getattr(reader, "path", id(reader))), tuple(steps), int(anchor_step), bool(row_normalise), n_components)
    if use_cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    order = sorted({int(anchor_step), *steps})
    T = len(order)
    chunk_bytes = 8 * T * int(chunk_cols)
    trunk = reader.subset_columns("trunk")
    gram = stream_grams(reader, {"trunk": trunk}, steps=order, ref=int(anchor_step),
                        chunk_bytes=chunk_bytes, verify=False)["trunk"]
    ai, ri = gram.index(int(anchor_step)), gram.indices(steps)
    rp = pca_rows(gram, coeff_rows(T, ri, ai), row_normalise=row_normalise, floor=_FLOOR, n_dirs=min(n_components, len(steps)))
    proj = gram.G @ rp.dirs  # (T, k): <x_t, v_j>
    cols = []
    for j in range(rp.dirs.shape[1]):
        if rp.pca.sigma[j] <= 0 or not rp.dirs[:, j].any():
            break
        c = rp.dirs[:, j]
        # sign: <x_last, v_j> > 0 (W9)
        cols.append(-c if proj[ri[-1], j] - proj[ai, j] < 0 else c)
    if not cols:
        raise ValueError(f"backbone_from_trajectory: all drift rows are zero (steps {steps}, anchor {anchor_step})")
    V = reconstruct_directions(reader, gram, np.stack(cols, axis=1), columns=trunk, chunk_bytes=chunk_bytes,
                               dtype=np.float64)
    pcs = [(v / max(np.linalg.norm(v), _FLOOR)).astype(np.float32) for v in V.T]
    res = ReferenceDirections(pcs[0], pcs, rp.pca.explained, steps, int(anchor_step), "trajectory")
    if use_cache:
        _CACHE[key] = res
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return res


def rolling_backbone(
    reader, window: int, upto_step: int | None = None, row_normalise: bool = True,
    min_snapshots: int = 3, n_components: int = 2, **kw,
) -> ReferenceDirections | None:
    """Backbone of the last `window` snapshots with step ≤ `upto_step` (anchor = the first of them).

    None while fewer than `min_snapshots` (≥ 2) snapshots are available.
    """
    avail = [s for s in reader.steps if upto_step is None or s <= upto_step]
    if len(avail) < max(2, min_snapshots):
        return None
    win = avail[-window:]
    res = backbone_from_trajectory(reader, win[1:], win[0], row_normalise, n_components, **kw)
    res.source = f"rolling(W={window})"
    return res


def global_backbone(
    reader, anchor_step: int = 1, upto_step: int | None = None, row_normalise: bool = False,
    min_snapshots: int = 3, n_components: int = 2, **kw,
) -> ReferenceDirections | None:
    """Backbone of all snapshots in (anchor_step, upto_step] relative to θ(anchor_step) (§5.1/§5.10).

    Falls back to the first stored step ≥ anchor_step when the anchor itself is missing.
    """
    cand = [s for s in reader.steps if s >= anchor_step]
    if not cand:
        return None
    anchor = cand[0]
    rows = [s for s in cand[1:] if upto_step is None or s <= upto_step]
    if len(rows) + 1 < max(2, min_snapshots):
        return None
    res = backbone_from_trajectory(reader, rows, anchor, row_normalise, n_components, **kw)
    res.source = f"global(anchor={anchor}, {'row-normalised' if row_normalise else 'raw'})"
    return res


def switching_direction(reader, peak_step: int, trough_step: int) -> np.ndarray:
    """v_sw = (θ_peak − θ_trough)/‖·‖ over the trunk columns, float32 (D_trunk,) (PAPER_MAP §5.12)."""
    idx = np.concatenate([np.arange(c.start, c.stop) for c in reader.subset_columns("trunk")])
    d = reader.load(int(peak_step))[idx].astype(np.float64) - reader.load(int(trough_step))[idx].astype(np.float64)
    nrm = np.linalg.norm(d)
    if nrm <= 0:
        raise ValueError(f"switching_direction: θ({peak_step}) == θ({trough_step})")
    return (d / nrm).astype(np.float32)


def load_direction(
    path: str | Path, dim: int | None = None, key: str | None = None,
    names: Sequence[str] | None = None, normalise: bool = True,
) -> np.ndarray:
    """Load a fixed direction (e.g. v_b from another run's analysis) as float32 (D,).

    Formats: `.npy` (a (D,) array, or (k, D) whose first row is used), `.npz` (array `key`,
    default the first of `v_b`, `backbone`, `v`, or the only array; an optional `names` array is
    checked against `names`), `.pt` (a tensor or a dict holding one under `key`). The vector must
    be in the canonical trunk order of `backbone_lab.trunk` (the store's order); `dim` is checked.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference direction file {path} does not exist")
    stored_names = None
    if path.suffix == ".npy":
        arr = np.load(path)
    elif path.suffix == ".npz":
        z = np.load(path, allow_pickle=False)
        if "names" in z.files:
            stored_names = [str(x) for x in z["names"]]
        cands = [key] if key else [k for k in ("v_b", "backbone", "v") if k in z.files]
        arrays = [k for k in z.files if k != "names"]
        if not cands:
            if len(arrays) != 1:
                raise ValueError(f"{path}: several arrays {arrays}; pass key=")
            cands = arrays
        arr = z[cands[0]]
    elif path.suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = obj[key or next(k for k in ("v_b", "backbone", "v") if k in obj)]
        arr = obj.float().numpy()
    else:
        raise ValueError(f"{path}: unsupported direction file type (use .npy, .npz or .pt)")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[0]
    arr = arr.reshape(-1)
    if dim is not None and arr.size != dim:
        raise ValueError(f"{path}: direction has {arr.size} entries, the model's trunk has {dim}")
    if stored_names is not None and names is not None and list(stored_names) != list(names):
        raise ValueError(f"{path}: stored tensor order differs from the model's canonical order (bug W8 guard)")
    if normalise:
        nrm = np.linalg.norm(arr)
        if nrm <= 0:
            raise ValueError(f"{path}: direction is zero")
        arr = arr / nrm
    return arr.astype(np.float32)


@dataclass
class ReferenceConfig:
    """How a diagnostic obtains its reference direction (the `reference:` node of the YAMLs)."""

    kind: str = "rolling"  # rolling | global | file
    window: int = 10  # rolling: snapshots per window (W); W−1 drift rows
    min_snapshots: int = 3  # no diagnostic before this many snapshots exist
    row_normalise: bool = True  # rolling/global: row-normalise drifts (§5.0)
    anchor_step: int = 1  # global: anchor snapshot (θ(1) in the paper)
    path: str | None = None  # file: .npy / .npz / .pt with a (D,) trunk vector
    key: str | None = None  # file: array name inside .npz / .pt
    trajectory_dir: str | None = None  # default <run_dir>/trajectory

    @classmethod
    def from_any(cls, node) -> "ReferenceConfig":
        if node is None:
            return cls()
        if isinstance(node, cls):
            return node
        d = dict(node)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"reference: unknown keys {sorted(unknown)}; allowed {sorted(cls.__dataclass_fields__)}")
        cfg = cls(**d)
        if cfg.kind not in ("rolling", "global", "file"):
            raise ValueError(f"reference.kind must be rolling | global | file, got {cfg.kind!r}")
        if cfg.kind == "file" and not cfg.path:
            raise ValueError("reference.kind=file needs reference.path")
        return cfg


class ReferenceProvider:
    """Resolves a `ReferenceConfig` to directions at a given step; caches until the store grows."""

    def __init__(self, cfg: ReferenceConfig, run_dir: str | Path | None = None, dim: int | None = None,
                 names: Sequence[str] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.dim, self.names = dim, names
        self._fixed: ReferenceDirections | None = None

    @property
    def trajectory_dir(self) -> Path | None:
        if self.cfg.trajectory_dir:
            return Path(self.cfg.trajectory_dir)
        return RunDir(self.run_dir).trajectory if self.run_dir is not None else None

    def reader(self):
        tdir = self.trajectory_dir
        if tdir is None or not (tdir / "manifest.json").exists():
            return None
        return _open_reader(tdir)

    def get(self, upto_step: int | None = None) -> ReferenceDirections | None:
        """Directions from snapshots with step ≤ `upto_step` (file: always the same); None if not yet."""
        c = self.cfg
        if c.kind == "file":
            if self._fixed is None:
                v = load_direction(c.path, self.dim, c.key, self.names)
                self._fixed = ReferenceDirections(v, [v], None, [], None, f"file({c.path})")
            return self._fixed
        reader = self.reader()
        if reader is None:
            return None
        trunk_dim = sum(c.stop - c.start for c in reader.subset_columns("trunk"))
        if self.dim is not None and trunk_dim != self.dim:
            raise ValueError(f"{reader.path}: stored trunk dim {trunk_dim} != the model's trunk dim {self.dim} "
                             f"(subset {reader.subset!r})")
        if c.kind == "rolling":
            return rolling_backbone(reader, c.window, upto_step, c.row_normalise, c.min_snapshots)
        return global_backbone(reader, c.anchor_step, upto_step, c.row_normalise, c.min_snapshots)
