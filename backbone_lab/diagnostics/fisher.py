"""Rayleigh quotients of the empirical Fisher along chosen directions (PAPER_MAP §5.10, bug W8).

    q(v) = vᵀ F̂ v / vᵀv

Two estimators of F̂ for the composite loss L = L_LM + λ L_probe (λ in force at that step):

(a) **mini-batch** (the paper's): G ∈ ℝ^{M×D} holds M batch-mean trunk gradients, one per
    mini-batch; F̂ = GᵀG/M, so q(v) = ‖Gv‖²/(M‖v‖²). `rayleigh_minibatch` streams the rows of G
    (never stores G) and keeps only the M×K projections.
(b) **per-sample** (exact empirical Fisher over N sequences): F̂ = (1/N) Σ_i g_i g_iᵀ with g_i
    the trunk gradient of sequence i's own composite loss (`objective.per_sample_composite_loss`).
    g_i·v is the directional derivative of ℓ_i along v, so one forward-mode pass
    (`torch.func.jvp`, batched over K directions with `vmap`) returns all N×K of them without
    materialising a single per-sample gradient: memory O(K × activations), not O(N × D).

Directions are flat trunk vectors in the canonical order of `backbone_lab.trunk`; they become
per-parameter tangents only through `trunk.unflatten(v, trunk.subset_shapes(model))`, and
gradients are flattened only through `trunk.flatten` — the same order for both, which is what
rules out the reference's ordering bug W8.

Attention: the fused SDPA kernels (flash / memory-efficient, CPU and CUDA) implement no
forward-mode derivative, so every pass here runs under `sdpa_kernel(SDPBackend.MATH)` (the
composite math kernel) — the same function, O(T²) attention memory. The model is put in eval
mode for the duration (no dropout; PAPER_MAP §5.10 uses `model.eval()`), then restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from backbone_lab import trunk
from backbone_lab.objective import composite_loss, per_sample_composite_loss

Batch = Mapping[str, torch.Tensor]


@contextlib.contextmanager
def fisher_mode(model: torch.nn.Module):
    """eval mode + the math SDPA kernel (forward-mode AD capable); restores the train flag."""
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        model.train(was_training)


def _split_params(model: torch.nn.Module, subset: str):
    """(frozen non-subset params, subset params, subset shapes), all detached, canonical order."""
    named = dict(model.named_parameters())
    names = trunk.subset_names(model, subset)
    frozen = {k: v.detach() for k, v in named.items() if k not in set(names)}
    primals = {k: named[k].detach() for k in names}
    shapes = {k: named[k].shape for k in names}
    return frozen, primals, shapes


def _as_rows(directions: torch.Tensor) -> torch.Tensor:
    return directions.unsqueeze(0) if directions.dim() == 1 else directions


# ----------------------------------------------------------------------------- per-sample (b)
def per_sample_directional_derivatives(
    model: torch.nn.Module,
    batch: Batch,
    directions: torch.Tensor,
    lam: float,
    subset: str = "trunk",
    direction_chunk: int | None = None,
    sample_chunk: int | None = None,
) -> torch.Tensor:
    """J[k, i] = g_i · v_k, shape (K, N): per-sample gradients projected on K directions.

    Args:
        model: a `GPT` (any module mapping input_ids -> logits).
        batch: dict with `input_ids`, `targets`, `probe_mask`, each (N, T), on the model's device.
        directions: (K, D) or (D,) flat vectors in the canonical `subset` order (any norm).
        lam: λ of the composite loss.
        direction_chunk / sample_chunk: bound memory by splitting the K directions (vmap width)
            or the N sequences into pieces; the result does not depend on them.

    One `jvp` of the per-sample loss vector (N,) per direction, all directions in one `vmap`;
    the primal forward is shared. float32 loss arithmetic (the objective casts logits to fp32).
    """
    V = _as_rows(directions)
    frozen, primals, shapes = _split_params(model, subset)
    D = sum(int(s.numel()) for s in shapes.values())
    if V.shape[1] != D:
        raise ValueError(f"directions have {V.shape[1]} entries; the {subset!r} subset has {D}")
    V = V.to(device=next(iter(primals.values())).device, dtype=next(iter(primals.values())).dtype)
    N = batch["input_ids"].shape[0]
    kc = direction_chunk or V.shape[0]
    nc = sample_chunk or N
    out = torch.empty(V.shape[0], N, dtype=torch.float32, device=V.device)
    with fisher_mode(model):
        for n0 in range(0, N, nc):
            ids = batch["input_ids"][n0 : n0 + nc]
            tgt = batch["targets"][n0 : n0 + nc]
            pm = batch["probe_mask"][n0 : n0 + nc]

            def losses(p):
                logits = functional_call(model, {**frozen, **p}, (ids,))
                return per_sample_composite_loss(logits, tgt, pm, lam)

            def along(v):
                return jvp(losses, (primals,), (trunk.unflatten(v, shapes),))[1]

            for k0 in range(0, V.shape[0], kc):
                out[k0 : k0 + kc, n0 : n0 + nc] = vmap(along)(V[k0 : k0 + kc]).float()
    return out


def explicit_per_sample_grads(
    model: torch.nn.Module, batch: Batch, lam: float, subset: str = "trunk", chunk: int | None = None
) -> torch.Tensor:
    """Per-sample gradients, (N, D) in canonical order, via `vmap(grad)` (tests / benchmarks).

    Memory O(N × D): this is what the JVP path avoids.
    """
    frozen, primals, shapes = _split_params(model, subset)

    def one(p, ids, tgt, pm):
        logits = functional_call(model, {**frozen, **p}, (ids[None],))
        return per_sample_composite_loss(logits, tgt[None], pm[None], lam)[0]

    N = batch["input_ids"].shape[0]
    c = chunk or N
    rows = []
    with fisher_mode(model):
        for n0 in range(0, N, c):
            g = vmap(grad(one), in_dims=(None, 0, 0, 0))(
                primals,
                batch["input_ids"][n0 : n0 + c],
                batch["targets"][n0 : n0 + c],
                batch["probe_mask"][n0 : n0 + c],
            )
            n = g[next(iter(shapes))].shape[0]
            rows.append(torch.stack([trunk.flatten(g[k][i] for k in shapes) for i in range(n)]))
    return torch.cat(rows, 0)


def rayleigh_from_projections(proj: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """q_k = mean_rows (row·v_k)² / ‖v_k‖² from projections of shape (K, R) (R = N or M)."""
    V = _as_rows(directions)
    sq = proj.double().pow(2).mean(dim=1)
    return sq / V.double().pow(2).sum(dim=1).to(sq.device)


def explicit_per_sample_projections(
    model: torch.nn.Module, batch: Batch, directions: torch.Tensor, lam: float,
    subset: str = "trunk", sample_chunk: int | None = None,
) -> torch.Tensor:
    """J[k, i] = g_i · v_k like `per_sample_directional_derivatives`, but through explicit
    per-sample gradients (`vmap(grad)`), `sample_chunk` of them at a time: memory
    O(sample_chunk × D), cost ≈ one forward + backward of the batch whatever K is."""
    V = _as_rows(directions)
    N = batch["input_ids"].shape[0]
    c = sample_chunk or N
    cols = []
    for n0 in range(0, N, c):
        part = {k: batch[k][n0 : n0 + c] for k in ("input_ids", "targets", "probe_mask")}
        G = explicit_per_sample_grads(model, part, lam, subset)
        cols.append((V.to(G.device, torch.float64) @ G.double().T).float())
    return torch.cat(cols, dim=1)


PER_SAMPLE_METHODS = ("jvp", "explicit", "auto")


def choose_per_sample_method(method: str, n: int, D: int, explicit_max_bytes: float = 2**30) -> str:
    """`auto`: explicit per-sample gradients while N×D float32 fit in `explicit_max_bytes`
    (faster for small D or many directions: its cost does not grow with K), else JVP (memory
    independent of D×N; cost ∝ K forward passes)."""
    if method not in PER_SAMPLE_METHODS:
        raise ValueError(f"per-sample method must be one of {PER_SAMPLE_METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "explicit" if 4.0 * n * D <= explicit_max_bytes else "jvp"


def rayleigh_per_sample(
    model: torch.nn.Module, batch: Batch, directions: torch.Tensor, lam: float, method: str = "jvp", **kw
) -> torch.Tensor:
    """q(v_k) = (1/N) Σ_i (g_i·v_k)² / ‖v_k‖² for the per-sample empirical Fisher, shape (K,).

    `method`: `jvp` (default; `per_sample_directional_derivatives`), `explicit`
    (`explicit_per_sample_projections`) or `auto` (`choose_per_sample_method`). Same numbers.
    """
    if method == "auto":
        method = choose_per_sample_method(method, batch["input_ids"].shape[0], trunk.subset_dim(model, kw.get("subset", "trunk")))
    if method == "explicit":
        kw.pop("direction_chunk", None)
        J = explicit_per_sample_projections(model, batch, directions, lam, **kw)
    elif method == "jvp":
        J = per_sample_directional_derivatives(model, batch, directions, lam, **kw)
    else:
        raise ValueError(f"per-sample method must be one of {PER_SAMPLE_METHODS}, got {method!r}")
    return rayleigh_from_projections(J, directions)


# ----------------------------------------------------------------------------- mini-batch (a)
def minibatch_gradient_rows(
    model: torch.nn.Module, batches: Iterable[Batch], lam: float, subset: str = "trunk"
) -> Iterable[torch.Tensor]:
    """Yield the batch-mean composite-loss trunk gradient of each batch, flat (D,), canonical order.

    `torch.autograd.grad` (nothing is accumulated into `.grad`), eval mode, math SDPA kernel.
    """
    params = list(trunk.named_subset(model, subset).values())
    for b in batches:
        with fisher_mode(model), torch.enable_grad():
            parts = composite_loss(model(b["input_ids"]), b["targets"], b["probe_mask"], lam)
            gs = torch.autograd.grad(parts.loss, params, allow_unused=True)
        yield trunk.flatten(torch.zeros_like(p) if g is None else g for g, p in zip(gs, params))


def _project64(V: torch.Tensor, g64: torch.Tensor, max_bytes: int = 1 << 29) -> torch.Tensor:
    """V @ g in float64 without a full float64 copy of V (row chunks of ≤ `max_bytes`)."""
    V = V.to(g64.device)
    rows = max(1, int(max_bytes // (8 * max(1, V.shape[1]))))
    return torch.cat([V[i : i + rows].double() @ g64 for i in range(0, V.shape[0], rows)])


@dataclass
class MinibatchRayleigh:
    q: torch.Tensor  # (K,) float64 Rayleigh quotients
    proj: torch.Tensor  # (K, M) projections g_m · v_k
    trace: float  # tr(F̂) = (1/M) Σ_m ‖g_m‖²
    gram: torch.Tensor | None = field(default=None)  # (M, M) G Gᵀ / M if requested


def rayleigh_minibatch(
    G_rows: Iterable[torch.Tensor] | Callable[[], Iterable[torch.Tensor]],
    directions: torch.Tensor,
    keep_gram: bool = False,
) -> MinibatchRayleigh:
    """q(v_k) = ‖G v_k‖² / (M ‖v_k‖²) with F̂ = GᵀG/M, streaming the M rows of G.

    Args:
        G_rows: iterable (or a zero-argument callable returning one) of flat (D,) gradients,
            e.g. `minibatch_gradient_rows(model, batches, lam)`.
        directions: (K, D) or (D,).
        keep_gram: also return the M×M Gram GGᵀ/M (its eigenvalues are F̂'s non-zero spectrum,
            PAPER_MAP §5.11); keeps the rows on the host meanwhile (M × D floats).
    """
    V = _as_rows(directions)
    rows = G_rows() if callable(G_rows) else G_rows
    projs, trace, kept = [], 0.0, []
    for g in rows:
        g64 = g.reshape(-1).double()
        projs.append(_project64(V, g64))
        trace += float(g64 @ g64)
        if keep_gram:
            kept.append(g.detach().reshape(-1).cpu())
    if not projs:
        raise ValueError("rayleigh_minibatch: no gradient rows")
    P = torch.stack(projs, dim=1)  # (K, M)
    M = P.shape[1]
    gram = None
    if keep_gram:
        Gm = torch.stack(kept).double()
        gram = Gm @ Gm.T / M
    return MinibatchRayleigh(rayleigh_from_projections(P, V), P, trace / M, gram)


# ----------------------------------------------------------------------------- directions
def random_complement_directions(
    v_b: torch.Tensor, K: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """K orthonormal directions in the orthogonal complement of v_b, shape (K, D).

    Gaussian D×K matrix → project out v̂_b → reduced QR; then project and QR once more
    ("twice is enough") so orthogonality to v_b holds to float rounding even in 2.5e7 dims.
    The draw depends only on `generator` (its device is used for the draw), not on global RNG.
    """
    v = v_b.reshape(-1)
    D = v.numel()
    if not 1 <= K < D:
        raise ValueError(f"random_complement_directions: need 1 <= K < D, got K={K}, D={D}")
    dev = generator.device if generator is not None else v.device
    Z = torch.randn(D, K, generator=generator, device=dev, dtype=torch.float32).to(v.device)
    vh = (v.double() / v.double().norm()).to(torch.float32).unsqueeze(1)  # (D, 1)
    for _ in range(2):
        Z = Z - vh @ (vh.T @ Z)
        Z, _r = torch.linalg.qr(Z, mode="reduced")
    return Z.T.contiguous().to(v.dtype)


# ----------------------------------------------------------------------------- high level
@dataclass
class FisherResult:
    """Rayleigh quotients of one estimator at one state."""

    estimator: str  # "per_sample" | "minibatch"
    q: dict[str, float]  # name -> q(v) for the named directions
    q_random: list[float]  # q of the K random complement directions
    n: int  # N sequences (per_sample) or M mini-batches (minibatch)
    trace: float | None = None  # tr F̂ (minibatch only)

    @property
    def q_random_mean(self) -> float:
        return float(sum(self.q_random) / len(self.q_random)) if self.q_random else float("nan")

    @property
    def anisotropy(self) -> float:
        """α = q(v_b) / mean_k q(u_k) (NaN without a backbone or random directions)."""
        qb = self.q.get("backbone")
        m = self.q_random_mean
        return float(qb / m) if qb is not None and m > 0 else float("nan")

    def row(self) -> dict[str, float]:
        r = {f"q_{k}": v for k, v in self.q.items()}
        qr = torch.tensor(self.q_random, dtype=torch.float64)
        r.update(
            q_random_mean=self.q_random_mean,
            q_random_std=float(qr.std()) if len(self.q_random) > 1 else float("nan"),
            anisotropy=self.anisotropy,
            n=self.n,
        )
        if self.trace is not None:
            r["trace"] = self.trace
        return r


def fisher_quotients(
    model: torch.nn.Module,
    named_directions: Mapping[str, torch.Tensor],
    lam: float,
    estimator: str,
    *,
    batch: Batch | None = None,
    batches: Sequence[Batch] | None = None,
    n_random: int = 10,
    generator: torch.Generator | None = None,
    direction_chunk: int | None = None,
    sample_chunk: int | None = None,
    per_sample_method: str = "jvp",
) -> FisherResult:
    """q(v) for the named directions plus `n_random` random directions ⟂ `named_directions['backbone']`.

    estimator "per_sample" uses `batch` (N sequences; `per_sample_method` jvp | explicit | auto,
    see `rayleigh_per_sample`); "minibatch" uses `batches`
    (M mini-batches, gradient rows). Direction names are free; `backbone` drives the anisotropy.
    """
    names = list(named_directions)
    dirs = [named_directions[n].reshape(-1) for n in names]
    if n_random and "backbone" in named_directions:
        R = random_complement_directions(named_directions["backbone"], n_random, generator)
        dirs += list(R)
    else:
        n_random = 0
    if not dirs:
        raise ValueError("fisher_quotients: no directions")
    V = torch.stack([d.to(dirs[0].device, torch.float32) for d in dirs])
    if estimator == "per_sample":
        if batch is None:
            raise ValueError("fisher_quotients: the per_sample estimator needs `batch`")
        q = rayleigh_per_sample(model, batch, V, lam, method=per_sample_method,
                                direction_chunk=direction_chunk, sample_chunk=sample_chunk)
        n, tr = int(batch["input_ids"].shape[0]), None
    elif estimator == "minibatch":
        if not batches:
            raise ValueError("fisher_quotients: the minibatch estimator needs `batches`")
        res = rayleigh_minibatch(minibatch_gradient_rows(model, batches, lam), V)
        q, n, tr = res.q, len(batches), res.trace
    else:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose per_sample or minibatch")
    q = [float(x) for x in q.cpu()]
    return FisherResult(estimator, dict(zip(names, q[: len(names)])), q[len(names) :], n, tr)
