"""The three diagnostics on a stored run, without retraining (`run_offline_diagnostics`).

    from backbone_lab.diagnostics.offline import run_offline_diagnostics
    out = run_offline_diagnostics("multirun_outputs/runs/<run>", {"steps": [200, 1800, 4800]})

Weights at step t: the model is rebuilt from `<run_dir>/config.yaml`'s `model` node; every tensor
the trajectory stores (the trunk, by default) comes from snapshot t; **the remaining parameters
(embeddings / tied head, position embeddings, LayerNorms) come from a checkpoint** — a
`checkpoints/*<t:06d>*.ckpt` of that very step when one exists, else `checkpoints/last.ckpt` (the
final weights). With a trunk-only store and only `last.ckpt`, earlier steps are therefore
evaluated on a hybrid model: trunk(t) + final non-trunk weights. The gradient and Fisher
diagnostics are trunk-restricted, but they are functions of the whole network, so they are exact
only at the checkpointed step(s) (or with `snapshots.subset=full`). Every output row records
`nontrunk_step` (the step the non-trunk weights come from) so this is never silent. The update
alignment needs the store only and is always exact.

Configuration (a mapping; missing keys take these defaults):

    steps: null            # steps for grad/Fisher (null: n_steps evenly spaced stored steps >= 1)
    n_steps: 8             # with steps=null; null = every stored step >= 1
    device: cpu
    out_dir: null          # default <run_dir>/diagnostics/offline (same CSV names as online)
    reference: {kind: global, anchor_step: 1, row_normalise: true, ...}   # ReferenceConfig
    reference_upto: all    # all: v_b from the whole run (hindsight, sign fixed at the end); step: ≤ t
    grad_alignment: {enabled: true, n_batches: 8, batch_size: 16, split_losses: true}
    update_alignment: {enabled: true, delta: 200, sign_flip_min_run: 2}   # delta: int | auto
    fisher: {enabled: true, estimators: [per_sample, minibatch], n_samples: 32,
             minibatch_batches: 8, minibatch_size: 16, n_random: 10, seed: 42,
             directions: [backbone, pc2, switching], switching: {steps: null, path: null},
             per_sample_method: auto, direction_chunk: null, sample_chunk: null}
    examples: {epoch: 0, start: 0}   # fixed training examples (the same keys as the callbacks)

The callback YAML nodes (`conf/callbacks/{grad_alignment,update_alignment,fisher}.yaml`) are
accepted too: their keys that do not apply offline (`every_n_steps`, `_target_`, ...) are ignored.
"""

from __future__ import annotations

import dataclasses

import glob
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from backbone_lab import trunk
from backbone_lab.run_identity import plain as _plain
from backbone_lab.diagnostics import alignment as al
from backbone_lab.diagnostics import fisher as fi
from backbone_lab.analysis.diagnostic_records import FILES, RecordWriter
from backbone_lab.diagnostics.reference_direction import (
    ReferenceConfig, ReferenceProvider, load_direction, switching_direction,
)
from backbone_lab.model import GPT, ModelConfig
from backbone_lab.objective import composite_loss, lambda_at
from backbone_lab.run_dir import RunDir
from backbone_lab.saved_config import upgrade
from backbone_lab.durable import atomic_write_json

DEFAULTS: dict = {
    "steps": None,
    "n_steps": 8,
    "device": "cpu",
    "out_dir": None,
    # a finished run is measured against its global backbone (conf/reference/global.yaml); every
    # other reference field takes ReferenceConfig's default, as in training
    "reference": {"kind": "global"},
    "reference_upto": "all",
    "grad_alignment": {"enabled": True, "n_batches": 8, "batch_size": 16, "split_losses": True},
    "update_alignment": {"enabled": True, "delta": 200, "sign_flip_min_run": 2},
    "fisher": {"enabled": True, "estimators": ["per_sample", "minibatch"], "n_samples": 32,
               "minibatch_batches": 8, "minibatch_size": 16, "n_random": 10, "seed": 42,
               "directions": ["backbone", "pc2", "switching"], "switching": {"steps": None, "path": None},
               "per_sample_method": "auto", "direction_chunk": None, "sample_chunk": None},
    "examples": {"epoch": 0, "start": 0},
}
_REF_KEYS = set(ReferenceConfig.__dataclass_fields__)




def _merge(base: dict, over: Mapping | None) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in (over or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_config(cfg: Mapping | None) -> dict:
    """Defaults merged with `cfg` (a plain mapping or an OmegaConf node)."""
    c = _merge(DEFAULTS, _plain(cfg) or {})
    c["reference"] = {k: v for k, v in c["reference"].items() if k in _REF_KEYS}
    return c


# ----------------------------------------------------------------------------- run access
def load_run_config(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    path = RunDir(run_dir).config
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a backbone_lab run folder?")
    return upgrade(OmegaConf.to_container(OmegaConf.load(path), resolve=False))


def _checkpoint_for(run_dir: Path, step: int) -> tuple[Path | None, int | None]:
    """(checkpoint file, its step): one of exactly `step` if present, else last.ckpt."""
    ck = RunDir(run_dir).checkpoints
    exact = sorted(glob.glob(str(ck / f"*{step:06d}*.ckpt")))
    if exact:
        return Path(exact[0]), step
    last = RunDir(run_dir).last_checkpoint
    return (last, None) if last.exists() else (None, None)


_CKPT_CACHE: dict[str, tuple[dict, int]] = {}


def _load_checkpoint_model_state(path: Path) -> tuple[dict, int]:
    key = str(path)
    if key not in _CKPT_CACHE:
        state = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
        _CKPT_CACHE.clear()
        _CKPT_CACHE[key] = (sd, int(state.get("global_step", -1)))
    return _CKPT_CACHE[key]


def build_model_at(run_dir: str | Path, step: int, reader=None, device: str = "cpu",
                   vocab_size: int | None = None) -> tuple[GPT, dict]:
    """The run's `GPT` with stored tensors of snapshot `step` and the rest from a checkpoint.

    Returns (model, info) with info = {"nontrunk_source": path or None, "nontrunk_step": int}.
    """
    from backbone_lab.trajectory.store import TrajectoryReader

    run_dir = Path(run_dir)
    reader = reader or TrajectoryReader(RunDir(run_dir).trajectory, verify=False)
    mc = load_run_config(run_dir)["model"]
    ckpt, ck_step = _checkpoint_for(run_dir, step)
    sd, ck_global = _load_checkpoint_model_state(ckpt) if ckpt is not None else ({}, None)
    vocab = mc.get("vocab_size") or vocab_size or (sd["tok_emb.weight"].shape[0] if "tok_emb.weight" in sd else None)
    if vocab is None:
        raise ValueError(f"{run_dir}: model.vocab_size is null and no checkpoint holds the embedding; pass vocab_size")
    known = {f.name for f in dataclasses.fields(ModelConfig)}  # older runs saved a `preset` key
    cfg = ModelConfig(**{**{k: v for k, v in mc.items() if k in known}, "vocab_size": int(vocab)})
    model = GPT(cfg)
    stored = set(reader.names)
    missing_nontrunk = [n for n, _ in model.named_parameters() if n not in stored]
    if missing_nontrunk and not sd:
        raise FileNotFoundError(
            f"{run_dir}: the trajectory stores only {reader.subset!r}; the other parameters "
            f"({missing_nontrunk[:3]}...) need checkpoints/last.ckpt, which is missing")
    if sd:
        model.load_state_dict(sd, strict=False)
    named = reader.load_named(step)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, arr in named.items():
            if name not in params:
                raise ValueError(f"{reader.path}: stored tensor {name!r} is not a parameter of the rebuilt model")
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(arr)).view_as(params[name]))
    info = {"nontrunk_source": str(ckpt) if (ckpt and missing_nontrunk) else None,
            "nontrunk_step": (ck_step if ck_step is not None else ck_global) if missing_nontrunk else step}
    return model.to(device), info


def _default_batches(run_dir: Path, run_cfg: dict, c: dict, device: str) -> Callable[[str], object]:
    """Fixed training examples of the run's own data config (rebuilds the datamodule once)."""
    from backbone_lab.data.datamodule import BackboneDataModule
    from backbone_lab.data.config import DataConfig
    from backbone_lab.data.examples import collate
    from backbone_lab.typed_config import typed_config

    dm = BackboneDataModule(typed_config(DataConfig, run_cfg["data"], "data"), seq_len=int(run_cfg["model"]["seq_len"]), seed=int(run_cfg["seed"]))
    dm.setup("fit")
    ds = getattr(dm, "train_examples", None) or dm.train_set
    ep, start = int(c["examples"]["epoch"]), int(c["examples"]["start"])
    n_total = len(ds)

    def items(lo, n):
        b = collate([ds[(ep, (lo + i) % n_total)] for i in range(n)])
        return {k: v.to(device) for k, v in b.items()}

    f = c["fisher"]
    ga = c["grad_alignment"]
    n_ps, M, b = int(f["n_samples"]), int(f["minibatch_batches"]), int(f["minibatch_size"])
    cache: dict = {}

    def source(kind: str):
        if kind not in cache:
            if kind == "per_sample":
                cache[kind] = items(start, n_ps)
            elif kind == "minibatch":  # same keys as FisherCallback(batches=fixed)
                cache[kind] = [items(start + n_ps + m * b, b) for m in range(M)]
            elif kind == "grad":
                nb, bs = int(ga["n_batches"]), int(ga["batch_size"])
                cache[kind] = [items(start + n_ps + M * b + j * bs, bs) for j in range(nb)]
        return cache[kind]

    return source


def auto_delta(stored: Sequence[int], preferred: int = 200) -> int:
    """`preferred` if some stored pair is that far apart, else the most common snapshot spacing."""
    have = set(int(s) for s in stored)
    if any(s - preferred in have for s in have):
        return preferred
    gaps = np.diff(sorted(have))
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return preferred
    vals, counts = np.unique(gaps, return_counts=True)
    return int(vals[np.argmax(counts)])


def auto_steps(stored: Sequence[int], n: int | None) -> list[int]:
    """Up to `n` stored steps ≥ 1, evenly spaced by index, always including the last."""
    cand = [int(s) for s in stored if s >= 1]
    if n is None or len(cand) <= n:
        return cand
    idx = np.unique(np.round(np.linspace(0, len(cand) - 1, int(n))).astype(int))
    return [cand[i] for i in idx]


# ----------------------------------------------------------------------------- diagnostics
def _grad_row(model: GPT, batches, lam: float, v: torch.Tensor, split: bool) -> dict:
    params = list(trunk.named_subset(model).values())
    stats, lm_stats, pr_stats = [], [], []
    for b in batches:
        with fi.fisher_mode(model), torch.enable_grad():
            parts = composite_loss(model(b["input_ids"]), b["targets"], b["probe_mask"], lam)
            gs = torch.autograd.grad(parts.loss, params, retain_graph=split)
            stats.append(al.alignment_stats(trunk.flatten(gs), v))
            if split:
                g_lm = torch.autograd.grad(parts.lm, params, retain_graph=parts.n_probe > 0)
                lm_stats.append(al.alignment_stats(trunk.flatten(g_lm), v))
                if parts.n_probe > 0:
                    g_p = torch.autograd.grad(parts.probe, params)
                    pr_stats.append(al.alignment_stats(trunk.flatten(g_p), v))
    row = {}
    for prefix, group in (("", stats), ("lm_", lm_stats), ("probe_", pr_stats)):
        if not group and prefix:
            if split:
                row.update({f"{prefix}{k}": float("nan") for k in ("cos", "abs_cos", "abs_cos_std", "par_frac", "perp_frac")})
            continue
        arr = {k: np.array([s[k] for s in group]) for k in group[0]}
        row.update({f"{prefix}cos": arr["cos"].mean(), f"{prefix}abs_cos": arr["abs_cos"].mean(),
                    f"{prefix}abs_cos_std": arr["abs_cos"].std(ddof=1) if len(group) > 1 else float("nan"),
                    f"{prefix}par_frac": arr["par_frac"].mean(), f"{prefix}perp_frac": arr["perp_frac"].mean()})
        if not prefix:
            row.update(proj=arr["proj"].mean(), norm=arr["norm"].mean(), n_batches=len(group))
    return row


def run_offline_diagnostics(run_dir: str | Path, cfg: Mapping | None = None,
                            batch_source: Callable[[str], object] | None = None) -> dict:
    """Gradient alignment, update alignment and Fisher quotients of a stored run.

    Args:
        run_dir: a run folder (config.yaml, trajectory/, checkpoints/last.ckpt).
        cfg: see the module docstring.
        batch_source: optional `kind -> batches` (`"per_sample"` -> one batch dict,
            `"minibatch"` / `"grad"` -> list of batch dicts); default: the run's fixed training
            examples rebuilt from its data config.

    Writes `<out_dir>/{grad_alignment,update_alignment,fisher_per_sample,fisher_minibatch}.csv`
    and `update_alignment_summary.json`; returns {"steps", "out_dir", "grad_alignment": [rows],
    "update_alignment": [rows], "update_summary", "fisher_per_sample": [rows], "fisher_minibatch": [rows]}.
    """
    from backbone_lab.trajectory.store import TrajectoryReader

    run_dir = Path(run_dir)
    c = resolve_config(cfg)
    run_cfg = load_run_config(run_dir)
    reader = TrajectoryReader(RunDir(run_dir).trajectory, verify=False)
    out_dir = Path(c["out_dir"]) if c["out_dir"] else RunDir(run_dir).diagnostics / "offline"
    out_dir.mkdir(parents=True, exist_ok=True)
    device = c["device"]
    schedule = (run_cfg.get("objective") or {}).get("lambda_schedule") or [[0, 2.0]]
    ref_cfg = ReferenceConfig.from_any(c["reference"])
    provider = ReferenceProvider(ref_cfg, run_dir, reader.dim, reader.names)
    steps = [int(s) for s in (c["steps"] if c["steps"] is not None else auto_steps(reader.steps, c["n_steps"]))]
    D = reader.dim
    result: dict = {"steps": steps, "out_dir": str(out_dir), "grad_alignment": [], "update_alignment": [],
                    "fisher_per_sample": [], "fisher_minibatch": []}
    writers: dict[str, RecordWriter] = {}

    def emit(name: str, row: dict) -> None:
        if name not in writers:
            path = out_dir / FILES[name]
            if path.exists():
                path.unlink()  # an offline pass rewrites its own outputs
            writers[name] = RecordWriter(path, list(row))
        writers[name].append(row)
        result[name].append(row)

    def ref_at(step: int):
        return provider.get(None if c["reference_upto"] == "all" else step)

    # update alignment: store only
    ua = c["update_alignment"]
    if ua.get("enabled", True):
        delta = auto_delta(reader.steps) if ua["delta"] == "auto" else int(ua["delta"])
        have = set(reader.steps)
        hist = []
        for s in reader.steps:
            if s - delta in have and s >= delta:
                ref = ref_at(s)
                if ref is None:
                    continue
                u = torch.from_numpy(reader.load(s).astype(np.float64) - reader.load(s - delta).astype(np.float64))
                row = {"step": s, "delta": delta, "D": D, "noise_floor": al.noise_floor(D),
                       **al.alignment_stats(u, torch.from_numpy(ref.backbone)), "ref_step": ref.latest_step,
                       "ref_source": ref.source}
                hist.append((s, row["cos"]))
                emit("update_alignment", row)
        summ = {"delta": delta, "n_points": len(hist),
                "sign_flip_step": al.persistent_zero_crossing([h[0] for h in hist], [h[1] for h in hist],
                                                        int(ua.get("sign_flip_min_run", 2))),
                "zero_crossings": al.zero_crossings([h[0] for h in hist], [h[1] for h in hist]),
                "mean_abs_cos": float(np.mean([abs(h[1]) for h in hist])) if hist else None,
                "noise_floor": al.noise_floor(D), "reference": ref_cfg.kind}
        atomic_write_json(out_dir / "update_alignment_summary.json", summ, indent=2)
        result["update_summary"] = summ

    ga, fc = c["grad_alignment"], c["fisher"]
    if not (ga.get("enabled", True) or fc.get("enabled", True)) or not steps:
        return result
    if batch_source is None:
        batch_source = _default_batches(run_dir, run_cfg, c, device)
    estimators = list(fc.get("estimators", []))
    for s in steps:
        ref = ref_at(s)
        if ref is None:
            continue
        model, info = build_model_at(run_dir, s, reader, device)
        lam = lambda_at(s, schedule)
        v = torch.from_numpy(ref.backbone).to(device)
        common = {"lambda": lam, "nontrunk_step": info["nontrunk_step"], "ref_step": ref.latest_step}
        if ga.get("enabled", True):
            row = {"step": s, "D": D, "noise_floor": al.noise_floor(D),
                   **_grad_row(model, batch_source("grad"), lam, v, bool(ga.get("split_losses", True))),
                   **common, "ref_source": ref.source}
            emit("grad_alignment", row)
        if fc.get("enabled", True) and estimators:
            named = {"backbone": v}
            dirs = list(fc.get("directions", ["backbone"]))
            if "pc2" in dirs and ref.pc2 is not None:
                named["pc2"] = torch.from_numpy(ref.pc2).to(device)
            sw = fc.get("switching") or {}
            if "switching" in dirs and sw.get("path"):
                named["switching"] = torch.from_numpy(load_direction(sw["path"], D, sw.get("key"), reader.names)).to(device)
            elif "switching" in dirs and sw.get("steps"):
                named["switching"] = torch.from_numpy(switching_direction(reader, *sw["steps"])).to(device)
            for est in estimators:
                res = fi.fisher_quotients(
                    model, named, lam, est, batch=batch_source("per_sample") if est == "per_sample" else None,
                    batches=batch_source("minibatch") if est == "minibatch" else None,
                    n_random=int(fc.get("n_random", 10)), generator=torch.Generator().manual_seed(int(fc.get("seed", 42))),
                    direction_chunk=fc.get("direction_chunk"), sample_chunk=fc.get("sample_chunk"),
                    per_sample_method=fc.get("per_sample_method", "auto"))
                row = {"step": s, **{f"q_{d}": float("nan") for d in dirs}, **res.row(), **common,
                       "ref_source": ref.source}
                if est == "per_sample":
                    row.pop("trace", None)
                emit(f"fisher_{est}", row)
    return result


def analysis_hook(ctx: dict) -> dict:
    """Adapter for the analysis CLI's diagnostics hook:

        python -m backbone_lab.analyze <run_dir> diagnostics=[backbone_lab.diagnostics.offline:analysis_hook]

    Runs `run_offline_diagnostics` with the defaults (global backbone anchored at the analysis
    anchor, n_steps evenly spaced steps), writes the CSVs to `<analysis out_dir>/diagnostics/`,
    the figures `fig2_alignment.png` / `fig3_fisher.png` next to them, and returns a small
    JSON-able summary for summary.json.
    """
    from backbone_lab.analysis.diagnostic_figures import plot_alignment, plot_fisher

    run_dir = Path(ctx["run_dir"])
    out_dir = Path(ctx.get("out_dir") or RunDir(run_dir).analysis) / "diagnostics"
    anchor = ctx.get("anchor_step")
    cfg = {"out_dir": str(out_dir),
           "reference": {"kind": "global", "anchor_step": int(anchor) if anchor is not None else 1,
                         "row_normalise": True}}
    cfg["update_alignment"] = {"delta": "auto"}
    res = run_offline_diagnostics(run_dir, cfg)
    figs = {}
    for name, fn in (("fig2_alignment", plot_alignment), ("fig3_fisher", plot_fisher)):
        p = fn(out_dir, out_dir / f"{name}.png")
        if p is not None:
            figs[name] = str(p)

    def col(rows, key):
        return [r.get(key) for r in rows]

    return {
        "steps": res["steps"],
        "out_dir": str(out_dir),
        "figures": figs,
        "update_sign_flip_step": (res.get("update_summary") or {}).get("sign_flip_step"),
        "update_mean_abs_cos": (res.get("update_summary") or {}).get("mean_abs_cos"),
        "grad_abs_cos": col(res["grad_alignment"], "abs_cos"),
        "q_backbone_minibatch": col(res["fisher_minibatch"], "q_backbone"),
        "anisotropy_minibatch": col(res["fisher_minibatch"], "anisotropy"),
        "anisotropy_per_sample": col(res["fisher_per_sample"], "anisotropy"),
    }
