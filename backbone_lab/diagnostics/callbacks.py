"""Lightning callbacks for the in-training diagnostics (thin glue around the pure modules).

* `GradAlignmentCallback`  — per-batch trunk gradient vs the reference direction (SPEC §5.9);
* `UpdateAlignmentCallback` — Δ-step update θ(t) − θ(t−Δ) vs the reference direction (§5.8);
* `FisherCallback`         — Rayleigh quotients of the empirical Fisher (§5.10).

Contracts used (see docs/ARCHITECTURE.md): `pl_module.model` (a `GPT`), `pl_module.current_lambda(step)`,
`trainer.default_root_dir` (the run folder), `pl_module.loss_parts(batch, lam)`; `trainer.global_step` = optimizer steps
done; snapshots in `<run_dir>/trajectory` (written by `TrajectorySnapshotCallback`).

Step labels: "step t" is optimizer step t (1-based) — the gradient seen in
`on_before_optimizer_step` belongs to step t = global_step + 1 and is taken at θ(t−1); the update
and Fisher diagnostics run after step t (at θ(t), in `on_train_batch_end`, where global_step = t).
The reference direction of a diagnostic at step t uses the snapshots with step ≤ t−1 (gradient)
or ≤ t (update, Fisher) that exist at that moment.

Output: every row goes to `<run_dir>/diagnostics/<name>.csv` (flushed per row; readers de-dup on
step) and to every active logger as `diagnostics/<group>/<key>` at that step. Nothing runs between
cadence steps except an integer comparison. State (`state_dict`) carries the cadence position,
the update-alignment history and pending θ(t−Δ) copies across resume.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from backbone_lab import trunk
from backbone_lab.durable import atomic_write_json
from backbone_lab.run_dir import RunDir
from backbone_lab.run_identity import plain as _plain
from backbone_lab.diagnostics import alignment as al
from backbone_lab.diagnostics import fisher as fi
from backbone_lab.diagnostics.records import FILES, RecordWriter
from backbone_lab.diagnostics.reference_direction import (
    ReferenceConfig, ReferenceDirections, ReferenceProvider, load_direction, switching_direction,
)

log = logging.getLogger("backbone_lab.diagnostics")

ALIGN_KEYS = ("cos", "abs_cos", "par_frac", "perp_frac", "proj", "norm")




class _DiagnosticCallback(L.Callback):
    """Cadence, reference direction, CSV + logger output and resumable state."""

    group = "diag"  # metric group: diagnostics/<group>/...

    def __init__(self, every_n_steps: int, extra_steps: Sequence[int] = (), start_step: int = 1,
                 reference: Mapping | ReferenceConfig | None = None, subset: str = "trunk",
                 enabled: bool = True, log_to_loggers: bool = True):
        if int(every_n_steps) <= 0:
            raise ValueError(f"{type(self).__name__}: every_n_steps must be positive, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.extra_steps = {int(s) for s in (_plain(extra_steps) or ())}
        self.start_step = int(start_step)
        self.reference_cfg = ReferenceConfig.from_any(_plain(reference))
        self.subset, self.enabled, self.log_to_loggers = subset, bool(enabled), bool(log_to_loggers)
        self._provider: ReferenceProvider | None = None
        self._writers: dict[str, RecordWriter] = {}
        self._ref_cache: tuple[tuple, torch.Tensor] | None = None
        self.run_dir: Path | None = None
        self.last_step = -1  # last step a diagnostic was computed at (state)
        self.seconds_total = 0.0  # wall time spent in measurements (state; reported per row as `seconds`)
        self._t0 = 0.0

    # -- plumbing -----------------------------------------------------------------------
    def due(self, step: int) -> bool:
        if not self.enabled:
            return False
        return (step >= self.start_step and step % self.every_n_steps == 0) or step in self.extra_steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_dir = Path(trainer.default_root_dir)
        model = pl_module.model
        self.D = trunk.subset_dim(model, self.subset)
        self.names = trunk.subset_names(model, self.subset)
        self._provider = ReferenceProvider(self.reference_cfg, self.run_dir, self.D, self.names)

    def reference(self, upto_step: int) -> ReferenceDirections | None:
        try:
            return self._provider.get(upto_step)
        except (OSError, ValueError) as err:  # a damaged/partial store must not kill training
            warnings.warn(f"{type(self).__name__}: no reference direction at step {upto_step}: {err}", stacklevel=2)
            return None

    def _to_device(self, ref: ReferenceDirections, vec: np.ndarray, device) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(vec)).to(device)

    def backbone_tensor(self, ref: ReferenceDirections, device) -> torch.Tensor:
        key = (ref.source, tuple(ref.steps), ref.anchor_step, str(device))
        if self._ref_cache is None or self._ref_cache[0] != key:
            self._ref_cache = (key, self._to_device(ref, ref.backbone, device))
        return self._ref_cache[1]

    def start_timer(self) -> None:
        self._t0 = time.perf_counter()

    def emit(self, trainer: L.Trainer, csv_name: str, row: dict, step: int, metric_prefix: str | None = None) -> None:
        now = time.perf_counter()
        row["seconds"] = now - self._t0  # cost of this row's measurement
        self.seconds_total += now - self._t0
        self._t0 = now
        if not trainer.is_global_zero:
            return
        if csv_name not in self._writers:
            self._writers[csv_name] = RecordWriter(RunDir(self.run_dir).diagnostics / FILES[csv_name], list(row))
        self._writers[csv_name].append(row)
        if self.log_to_loggers and trainer.loggers:
            prefix = metric_prefix or f"diagnostics/{self.group}"
            metrics = {f"{prefix}/{k}": float(v) for k, v in row.items()
                       if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(float(v))}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "seconds_total": self.seconds_total}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_step = int(state_dict.get("last_step", -1))
        self.seconds_total = float(state_dict.get("seconds_total", 0.0))


# ----------------------------------------------------------------------------- gradient
class GradAlignmentCallback(_DiagnosticCallback):
    """Per-batch trunk gradient vs the reference direction (SPEC §5.9, paper Fig. 2).

    Args:
        every_n_steps / extra_steps / start_step: cadence in optimizer steps.
        hook: `before_optimizer_step` (default): the accumulated, pre-clip gradient of the step
            (mean over its micro-batches); `after_backward`: the first micro-batch's gradient only
            (a single-batch gradient even with accumulation; its norm carries Lightning's
            1/accumulate loss scaling, the cosines do not).
        split_losses: also the separate ∇L_LM and ∇L_probe of the step's last micro-batch (one
            extra forward + two backward passes at the cadence, eval mode; `probe_*` are empty
            when that micro-batch has no probe token), plus their mutual cosine.
        reference: see `ReferenceConfig` (rolling backbone by default).
    """

    group = "grad_align"

    def __init__(self, every_n_steps: int = 50, extra_steps: Sequence[int] = (), start_step: int = 1,
                 hook: str = "before_optimizer_step", split_losses: bool = False,
                 reference: Mapping | None = None, subset: str = "trunk", enabled: bool = True,
                 log_to_loggers: bool = True):
        super().__init__(every_n_steps, extra_steps, start_step, reference, subset, enabled, log_to_loggers)
        if hook not in ("before_optimizer_step", "after_backward"):
            raise ValueError(f"GradAlignmentCallback.hook must be before_optimizer_step | after_backward, got {hook!r}")
        self.hook, self.split_losses = hook, bool(split_losses)
        self._batch = None
        self._done_step = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.split_losses and self.due(trainer.global_step + 1):
            self._batch = batch  # a reference only; the last micro-batch of the step wins

    def on_after_backward(self, trainer, pl_module) -> None:
        step = trainer.global_step + 1
        if self.hook == "after_backward" and step != self._done_step and self.due(step):
            self._done_step = step
            self._measure(trainer, pl_module, step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step + 1
        if self.hook == "before_optimizer_step" and self.due(step):
            self._measure(trainer, pl_module, step)

    def _measure(self, trainer, pl_module, step: int) -> None:
        self.start_timer()
        ref = self.reference(step - 1)
        if ref is None:
            return
        model = pl_module.model
        v = self.backbone_tensor(ref, next(model.parameters()).device)
        lam = float(pl_module.current_lambda(step))
        g = trunk.flatten_grads(model, self.subset)
        row = {"step": step, "lambda": lam, "D": self.D, "noise_floor": al.noise_floor(self.D),
               **al.alignment_stats(g, v), "ref_step": ref.latest_step}
        if self.split_losses:  # fixed columns, empty when not measurable
            row.update({f"{p}{k}": float("nan") for p in ("lm_", "probe_") for k in ALIGN_KEYS})
            row["cos_lm_probe"] = float("nan")
        if self.split_losses and self._batch is not None:
            row.update(self._split(pl_module, self._batch, lam, v))
            self._batch = None
        row["ref_source"] = ref.source
        self.emit(trainer, "grad_alignment", row, step)
        self.last_step = step

    def _split(self, pl_module, batch, lam: float, v: torch.Tensor) -> dict:
        model = pl_module.model
        params = list(trunk.named_subset(model, self.subset).values())
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                parts = pl_module.loss_parts(batch, lam)
                g_lm = torch.autograd.grad(parts.lm, params, retain_graph=parts.n_probe > 0, allow_unused=True)
                g_lm = trunk.flatten(torch.zeros_like(p) if g is None else g for g, p in zip(g_lm, params))
                out = al.alignment_stats(g_lm, v, prefix="lm_")
                if parts.n_probe > 0:
                    g_p = torch.autograd.grad(parts.probe, params, allow_unused=True)
                    g_p = trunk.flatten(torch.zeros_like(p) if g is None else g for g, p in zip(g_p, params))
                    out.update(al.alignment_stats(g_p, v, prefix="probe_"))
                    out["cos_lm_probe"] = al.cosine(g_lm, g_p)
        finally:
            model.train(was_training)
        return out


# ----------------------------------------------------------------------------- update
class UpdateAlignmentCallback(_DiagnosticCallback):
    """Cosine of the Δ-step update u = θ(t) − θ(t−Δ) with the reference direction (SPEC §5.8).

    Computed at every step t that is a multiple of `every_n_steps` (default Δ) with t ≥ Δ, against
    the reference of the snapshots ≤ t (``cos``: in sample for a rolling reference, the paper's) and
    of the snapshots ≤ t − Δ (``oos_cos``, ``oos_ref_step``: out of sample). θ(t−Δ) is
    a flat copy taken after step t−Δ (on the model's device; one per pending interval) — kept in
    the callback state when `keep_in_checkpoint`, otherwise read from the trajectory store after a
    resume if that step was stored. At the end of training the zero crossings of the signed cosine
    are reported (`sign_flip_step`: the first with ≥ `sign_flip_min_run` same-sign points on each
    side) in `<run_dir>/diagnostics/update_alignment_summary.json` and to the loggers. The sign
    flip is meaningful against a sign-fixed *fixed* direction (reference.kind=file or global); a
    rolling backbone is re-signed along the latest drift, so its cosine stays mostly positive.
    """

    group = "update_align"

    def __init__(self, delta: int = 200, every_n_steps: int | None = None, extra_steps: Sequence[int] = (),
                 reference: Mapping | None = None, subset: str = "trunk", enabled: bool = True,
                 keep_in_checkpoint: bool = True, sign_flip_min_run: int = 2, log_to_loggers: bool = True):
        super().__init__(every_n_steps or delta, extra_steps, int(delta), reference, subset, enabled, log_to_loggers)
        if int(delta) <= 0:
            raise ValueError(f"UpdateAlignmentCallback.delta must be positive, got {delta}")
        self.delta = int(delta)
        self.keep_in_checkpoint = bool(keep_in_checkpoint)
        self.sign_flip_min_run = int(sign_flip_min_run)
        self.history: list[tuple[int, float]] = []  # (step, signed cos)
        self._pending: dict[int, torch.Tensor] = {}  # step -> θ(step), flat
        self._seen = -1

    def due(self, step: int) -> bool:
        return super().due(step) and step >= self.delta

    def _needs_capture(self, step: int) -> bool:
        return self.enabled and self.due(step + self.delta)

    def on_train_start(self, trainer, pl_module) -> None:
        self._seen = trainer.global_step
        if self._needs_capture(trainer.global_step) and trainer.global_step not in self._pending:
            self._pending[trainer.global_step] = trunk.flatten_params(pl_module.model, self.subset)
        dev = next(pl_module.model.parameters()).device
        self._pending = {s: t.to(dev) for s, t in self._pending.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._seen:  # not the last micro-batch of an optimizer step
            return
        self._seen = step
        if self._needs_capture(step):
            self._pending[step] = trunk.flatten_params(pl_module.model, self.subset)
        if self.due(step):
            self._measure(trainer, pl_module, step)
        for s in [s for s in self._pending if s + self.delta <= step]:  # used (or missed)
            del self._pending[s]

    def _base(self, step: int, device) -> torch.Tensor | None:
        base = self._pending.get(step - self.delta)
        if base is not None:
            return base
        reader = self._provider.reader()
        if reader is not None and (step - self.delta) in reader.steps and reader.dim == self.D:
            return torch.from_numpy(reader.load(step - self.delta)).to(device)
        return None

    def _measure(self, trainer, pl_module, step: int) -> None:
        self.start_timer()
        model = pl_module.model
        dev = next(model.parameters()).device
        base = self._base(step, dev)
        ref = self.reference(step)
        if base is None or ref is None:
            return
        u = trunk.flatten_params(model, self.subset) - base.to(dev, torch.float32)
        v = self.backbone_tensor(ref, dev)
        row = {"step": step, "delta": self.delta, "D": self.D, "noise_floor": al.noise_floor(self.D),
               **al.alignment_stats(u, v), "ref_step": ref.latest_step, "ref_source": ref.source,
               **self._out_of_sample(u, step, dev)}
        self.history.append((step, row["cos"]))
        self.emit(trainer, "update_alignment", row, step)
        self.last_step = step

    def _out_of_sample(self, u: torch.Tensor, step: int, device) -> dict:
        """cos of u with the reference of the snapshots ≤ t − Δ (it holds nothing of u, as the
        gradient's reference holds nothing of the gradient); the ``cos`` columns use the snapshots
        ≤ t, which for a rolling reference include θ(t) and so u itself (``ref_step == step``)."""
        ref = self.reference(step - self.delta) if step - self.delta >= 0 else None
        if ref is None:
            return {"oos_cos": float("nan"), "oos_abs_cos": float("nan"), "oos_ref_step": float("nan")}
        st = al.alignment_stats(u, self._to_device(ref, ref.backbone, device))
        return {"oos_cos": st["cos"], "oos_abs_cos": st["abs_cos"], "oos_ref_step": ref.latest_step}

    def summary(self) -> dict:
        hist = sorted(dict(self.history).items())
        steps, vals = [s for s, _ in hist], [c for _, c in hist]
        return {
            "delta": self.delta,
            "n_points": len(steps),
            "sign_flip_step": al.persistent_zero_crossing(steps, vals, self.sign_flip_min_run),
            "zero_crossings": al.zero_crossings(steps, vals),
            "mean_abs_cos": float(np.mean(np.abs(vals))) if vals else None,
            "noise_floor": al.noise_floor(self.D),
            "reference": self.reference_cfg.kind,
        }

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        summ = self.summary()
        out = RunDir(self.run_dir).diagnostics / "update_alignment_summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, summ, indent=2)
        if summ["sign_flip_step"] is not None and self.log_to_loggers:
            for logger in trainer.loggers:
                logger.log_metrics({f"diagnostics/{self.group}/sign_flip_step": summ["sign_flip_step"]},
                                   step=trainer.global_step)
        log.info("update alignment: sign flip at %s (zero crossings %s)", summ["sign_flip_step"], summ["zero_crossings"])

    def state_dict(self) -> dict:
        st = {"last_step": self.last_step, "seconds_total": self.seconds_total, "history": list(self.history)}
        if self.keep_in_checkpoint:
            st["pending"] = {int(s): t.detach().cpu().clone() for s, t in self._pending.items()}
        return st

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.history = [(int(s), float(c)) for s, c in state_dict.get("history", [])]
        self._pending = {int(s): t for s, t in state_dict.get("pending", {}).items()}


# ----------------------------------------------------------------------------- Fisher
class FisherCallback(_DiagnosticCallback):
    """Rayleigh quotients q(v) = vᵀF̂v/vᵀv of the empirical Fisher at θ(t) (SPEC §5.10, paper Fig. 3).

    Directions: `backbone` (the reference), `pc2` (second PC of the same snapshot window, if the
    reference comes from the store), `switching` (unit θ_peak − θ_trough from `switching.steps` =
    [peak, trough] once both are stored, or a fixed `switching.path`), and `n_random` orthonormal
    random directions ⟂ v_b (QR; CPU generator seeded with `seed` at every evaluation, so the draw
    is the same across steps and devices). α = q(backbone)/mean q(random).

    Estimators (`estimators`): `per_sample` — exact empirical Fisher of `n_samples` sequences,
    through JVP (no per-sample gradient is materialised) or explicit per-sample gradients
    (`per_sample_method`: jvp | explicit | auto — auto takes explicit while N×D floats fit in
    1 GiB, which is faster for small models; both give the same numbers); `minibatch` — the paper's M =
    `minibatch_batches` batch-mean gradients of `minibatch_size` sequences. λ = λ(t) of the
    schedule. Model in eval mode, math SDPA kernel (see `fisher.py`); training state is untouched.

    Batches (`batches`): `fixed` — training examples `(example_epoch, example_start + i)` from the
    datamodule (`train_examples`, or `train_set`), collated with `backbone_lab.data.examples.collate`:
    per_sample uses i < n_samples, minibatch the next M·b keys — the same sequences at every step;
    `current` — the step's last micro-batch (per_sample: its first n_samples rows; minibatch: split
    into M chunks). `fixed` falls back to `current` (with a warning) if the datamodule has no
    keyed training examples.
    """

    group = "fisher"

    def __init__(self, every_n_steps: int = 500, extra_steps: Sequence[int] = (), start_step: int = 1,
                 estimators: Sequence[str] = ("per_sample", "minibatch"), n_samples: int = 32,
                 minibatch_batches: int = 8, minibatch_size: int = 16, n_random: int = 10, seed: int = 42,
                 directions: Sequence[str] = ("backbone", "pc2", "switching"),
                 switching: Mapping | None = None, batches: str = "fixed", example_epoch: int = 0,
                 example_start: int = 0, per_sample_method: str = "auto",
                 direction_chunk: int | None = None, sample_chunk: int | None = None,
                 reference: Mapping | None = None, subset: str = "trunk", enabled: bool = True,
                 log_to_loggers: bool = True):
        super().__init__(every_n_steps, extra_steps, start_step, reference, subset, enabled, log_to_loggers)
        self.estimators = list(_plain(estimators))
        for e in self.estimators:
            if e not in ("per_sample", "minibatch"):
                raise ValueError(f"FisherCallback.estimators: unknown {e!r} (per_sample | minibatch)")
        if batches not in ("fixed", "current"):
            raise ValueError(f"FisherCallback.batches must be fixed | current, got {batches!r}")
        self.n_samples, self.M, self.b = int(n_samples), int(minibatch_batches), int(minibatch_size)
        self.n_random, self.seed = int(n_random), int(seed)
        self.directions = list(_plain(directions))
        self.switching = dict(_plain(switching) or {})
        self.batches = batches
        self.example_epoch, self.example_start = int(example_epoch), int(example_start)
        self.direction_chunk, self.sample_chunk = direction_chunk, sample_chunk
        fi.choose_per_sample_method(per_sample_method, 1, 1)  # validate
        self.per_sample_method = per_sample_method
        self._fixed: dict | None = None
        self._seen = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._seen = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._seen:
            return
        self._seen = step
        if self.due(step):
            self.measure(trainer, pl_module, step, batch)

    # -- batches ------------------------------------------------------------------------
    def _fixed_batches(self, trainer, device) -> dict | None:
        if self._fixed is not None:
            return self._fixed
        dm = getattr(trainer, "datamodule", None)
        ds = getattr(dm, "train_examples", None) or getattr(dm, "train_set", None)
        if ds is None:
            warnings.warn("FisherCallback: datamodule has no keyed training examples; using the current batch",
                          stacklevel=2)
            self.batches = "current"
            return None
        from backbone_lab.data.examples import collate

        n_total = len(ds) if hasattr(ds, "__len__") else None

        def items(lo, n):
            keys = [(self.example_epoch, (lo + i) % n_total if n_total else lo + i) for i in range(n)]
            return collate([ds[k] for k in keys])

        per = items(self.example_start, self.n_samples)
        mb = [items(self.example_start + self.n_samples + m * self.b, self.b) for m in range(self.M)]
        mv = lambda b: {k: v.to(device) for k, v in b.items()}  # noqa: E731
        self._fixed = {"per_sample": mv(per), "minibatch": [mv(b) for b in mb]}
        return self._fixed

    def _current_batches(self, batch) -> dict:
        per = {k: v[: self.n_samples] for k, v in batch.items() if k in ("input_ids", "targets", "probe_mask")}
        n = batch["input_ids"].shape[0]
        M = max(1, min(self.M, n))
        chunks = [range(i * n // M, (i + 1) * n // M) for i in range(M)]
        mb = [{k: batch[k][c.start : c.stop] for k in per} for c in chunks if len(c)]
        return {"per_sample": per, "minibatch": mb}

    # -- directions ---------------------------------------------------------------------
    def named_directions(self, ref: ReferenceDirections, device, upto_step: int) -> dict[str, torch.Tensor]:
        out = {}
        if "backbone" in self.directions:
            out["backbone"] = self.backbone_tensor(ref, device)
        if "pc2" in self.directions and ref.pc2 is not None:
            out["pc2"] = torch.from_numpy(ref.pc2).to(device)
        if "switching" in self.directions:
            sw = self._switching(upto_step)
            if sw is not None:
                out["switching"] = torch.from_numpy(sw).to(device)
        return out

    def _switching(self, upto_step: int) -> np.ndarray | None:
        if self.switching.get("path"):
            if not hasattr(self, "_sw_fixed"):
                self._sw_fixed = load_direction(self.switching["path"], self.D, self.switching.get("key"), self.names)
            return self._sw_fixed
        pair = self.switching.get("steps")
        if pair:
            peak, trough = int(pair[0]), int(pair[1])
            reader = self._provider.reader()
            if reader is not None and max(peak, trough) <= upto_step and {peak, trough} <= set(reader.steps):
                return switching_direction(reader, peak, trough)
        return None

    def measure(self, trainer, pl_module, step: int, batch=None) -> dict:
        self.start_timer()
        ref = self.reference(step)
        if ref is None:
            return {}
        model = pl_module.model
        dev = next(model.parameters()).device
        named = self.named_directions(ref, dev, step)
        lam = float(pl_module.current_lambda(step))
        src = self._fixed_batches(trainer, dev) if self.batches == "fixed" else None
        if src is None:
            if batch is None:
                return {}
            src = self._current_batches(batch)
        results = {}
        for est in self.estimators:
            res = fi.fisher_quotients(
                model, named, lam, est,
                batch=src["per_sample"], batches=src["minibatch"], n_random=self.n_random,
                generator=torch.Generator().manual_seed(self.seed),
                direction_chunk=self.direction_chunk, sample_chunk=self.sample_chunk,
                per_sample_method=self.per_sample_method,
            )
            row = {"step": step, "lambda": lam, **{f"q_{d}": float("nan") for d in self.directions},
                   **res.row(), "ref_step": ref.latest_step, "ref_source": ref.source}
            if est == "per_sample":
                row.pop("trace", None)
            else:
                row.setdefault("trace", float("nan"))
            self.emit(trainer, f"fisher_{est}", row, step, metric_prefix=f"diagnostics/{self.group}/{est}")
            results[est] = res
        self.last_step = step
        return results
