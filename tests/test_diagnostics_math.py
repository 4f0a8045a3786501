"""Pure-math tests of backbone_lab.diagnostics: Fisher estimators, directions, alignment, W8 guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backbone_lab import trunk
from backbone_lab.diagnostics import alignment as al
from backbone_lab.diagnostics import fisher as fi
from backbone_lab.model import GPT, ModelConfig


def perpendicular_fraction_direct(g: torch.Tensor, v: torch.Tensor) -> float:
    """‖g − ⟨g, v̂⟩v̂‖/‖g‖ computed explicitly on the D-vector (the oracle of the closed form)."""
    g64, v64 = g.reshape(-1).double(), v.reshape(-1).double()
    vh = v64 / v64.norm()
    r = g64 - torch.dot(g64, vh) * vh
    return float(r.norm() / g64.norm())


def tiny_gpt(dtype=torch.float64, seed=0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=53, n_layer=2, d_model=16, n_head=2, d_ff=32, seq_len=10)
    return GPT(cfg).to(dtype)


def make_batch(N=6, T=10, V=53, seed=1, probe=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (N, T), generator=g)
    tgt = torch.randint(0, V, (N, T), generator=g)
    tgt[0, :3] = -100  # some ignored targets
    pm = torch.zeros(N, T, dtype=torch.bool)
    if probe:
        pm[1::2, -2:] = True  # probe tokens in every second sequence only
    return {"input_ids": ids, "targets": tgt, "probe_mask": pm}


def rel(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ----------------------------------------------------------------------------- Fisher
def test_jvp_per_sample_fisher_equals_explicit_per_sample_grads():
    model = tiny_gpt()
    batch = make_batch()
    D = trunk.subset_dim(model)
    g = torch.Generator().manual_seed(3)
    V = torch.randn(4, D, generator=g, dtype=torch.float64)
    V[0] *= 7.0  # directions need not be unit
    lam = 2.5
    J = fi.per_sample_directional_derivatives(model, batch, V, lam)
    G = fi.explicit_per_sample_grads(model, batch, lam)  # (N, D) canonical order
    assert G.shape == (6, D)
    assert rel(J, (G.double() @ V.T).T) < 1e-6
    q_jvp = fi.rayleigh_per_sample(model, batch, V, lam)
    q_exp = ((G.double() @ V.T) ** 2).mean(0) / (V**2).sum(1)
    assert rel(q_jvp, q_exp) < 1e-6
    # chunking over directions / samples does not change the result
    J2 = fi.per_sample_directional_derivatives(model, batch, V, lam, direction_chunk=3, sample_chunk=4)
    assert rel(J2, J) < 1e-12


def test_per_sample_grads_are_gradients_of_the_per_sample_loss():
    """Sum of explicit per-sample grads equals autograd of Σ_i ℓ_i (ties G to the objective)."""
    from backbone_lab.objective import per_sample_composite_loss

    model = tiny_gpt()
    batch = make_batch()
    G = fi.explicit_per_sample_grads(model, batch, 2.0)
    model.zero_grad()
    per_sample_composite_loss(model(batch["input_ids"]), batch["targets"], batch["probe_mask"], 2.0).sum().backward()
    assert rel(G.sum(0), trunk.flatten_grads(model)) < 1e-6


def test_minibatch_estimator_equals_dense_gram():
    model = tiny_gpt()
    batches = [make_batch(N=3, seed=s) for s in range(5)]
    D = trunk.subset_dim(model)
    V = torch.randn(3, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = list(fi.minibatch_gradient_rows(model, batches, 2.0))
    G = torch.stack(rows).double()  # (M, D)
    F = G.T @ G / G.shape[0]
    q_dense = torch.einsum("kd,de,ke->k", V, F, V) / (V**2).sum(1)
    res = fi.rayleigh_minibatch(lambda: iter(rows), V, keep_gram=True)
    assert rel(res.q, q_dense) < 1e-10
    assert res.trace == pytest.approx(float(torch.trace(F)), rel=1e-10)
    assert rel(res.gram, G @ G.T / G.shape[0]) < 1e-12
    # each row is the batch-mean composite-loss gradient (same as .backward of composite_loss)
    from backbone_lab.objective import composite_loss

    model.zero_grad()
    b = batches[2]
    composite_loss(model(b["input_ids"]), b["targets"], b["probe_mask"], 2.0).loss.backward()
    assert rel(rows[2], trunk.flatten_grads(model)) < 1e-10


def test_random_complement_directions_orthonormal_and_perpendicular():
    D, K = 5000, 10
    v_b = torch.randn(D, generator=torch.Generator().manual_seed(1))
    R = fi.random_complement_directions(v_b, K, torch.Generator().manual_seed(42))
    assert R.shape == (K, D)
    assert torch.allclose(R @ R.T, torch.eye(K), atol=1e-5)
    assert float((R @ (v_b / v_b.norm())).abs().max()) < 1e-5
    R2 = fi.random_complement_directions(v_b, K, torch.Generator().manual_seed(42))
    assert torch.equal(R, R2)  # reproducible from the generator alone


def test_fisher_quotients_anisotropy_and_names():
    model = tiny_gpt(torch.float32)
    batch = make_batch()
    D = trunk.subset_dim(model)
    vb = torch.randn(D, generator=torch.Generator().manual_seed(5))
    res = fi.fisher_quotients(model, {"backbone": vb, "pc2": torch.randn(D)}, 2.0, "per_sample",
                              batch=batch, n_random=4, generator=torch.Generator().manual_seed(0))
    assert set(res.q) == {"backbone", "pc2"} and len(res.q_random) == 4
    assert res.anisotropy == pytest.approx(res.q["backbone"] / np.mean(res.q_random))
    row = res.row()
    assert {"q_backbone", "q_pc2", "q_random_mean", "anisotropy", "n"} <= set(row)
    mb = fi.fisher_quotients(model, {"backbone": vb}, 2.0, "minibatch",
                             batches=[make_batch(N=2, seed=s) for s in range(3)], n_random=2,
                             generator=torch.Generator().manual_seed(0))
    assert mb.n == 3 and mb.trace > 0


# ----------------------------------------------------------------------------- W8 guard
def test_flatten_pairs_grad_and_update_per_named_tensor():
    """⟨flatten(grad), flatten(Δθ)⟩ = Σ_named ⟨grad_i, Δθ_i⟩ (PAPER_MAP W8 fix)."""
    model = tiny_gpt()
    batch = make_batch()
    theta0 = {k: v.detach().clone() for k, v in trunk.named_subset(model).items()}
    flat0 = trunk.flatten_params(model)
    with torch.no_grad():
        for p in trunk.named_subset(model).values():
            p.add_(torch.randn_like(p) * 0.01)
    dtheta_named = {k: p.detach() - theta0[k] for k, p in trunk.named_subset(model).items()}
    model.zero_grad()
    from backbone_lab.objective import composite_loss

    composite_loss(model(batch["input_ids"]), batch["targets"], batch["probe_mask"], 2.0).loss.backward()
    named_grads = {k: p.grad for k, p in trunk.named_subset(model).items()}
    lhs = float(trunk.flatten_grads(model) @ (trunk.flatten_params(model) - flat0))
    rhs = sum(float((named_grads[k] * dtheta_named[k]).sum()) for k in named_grads)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    # and the sorted-key order of the reference bug would pair different coordinates
    sorted_flat = torch.cat([dtheta_named[k].reshape(-1) for k in sorted(dtheta_named)])
    assert abs(float(trunk.flatten_grads(model) @ sorted_flat) - rhs) > 1e-6 * abs(rhs)


def test_jvp_direction_order_matches_gradient_order_for_asymmetric_v():
    """q(v) via JVP = via explicit grads for a v that is not invariant under tensor reordering."""
    model = tiny_gpt()
    batch = make_batch()
    shapes = trunk.subset_shapes(model)
    # v: a distinct constant per named tensor (so any reordering of tensors changes it) + noise
    parts = [torch.full(s, float(i + 1)) + 0.1 * torch.randn(s) for i, s in enumerate(shapes.values())]
    v = trunk.flatten(parts).double()
    G = fi.explicit_per_sample_grads(model, batch, 2.0).double()
    q_exp = float(((G @ v) ** 2).mean() / (v @ v))
    q_jvp = float(fi.rayleigh_per_sample(model, batch, v, 2.0)[0])
    assert q_jvp == pytest.approx(q_exp, rel=1e-6)
    # the same tensors concatenated in sorted-key order give a different quotient
    v_sorted = torch.cat([dict(zip(shapes, parts))[k].reshape(-1) for k in sorted(shapes)]).double()
    assert not torch.equal(v_sorted, v)
    q_wrong = float(((G @ v_sorted) ** 2).mean() / (v_sorted @ v_sorted))
    assert abs(q_wrong - q_exp) > 1e-3 * q_exp


# ----------------------------------------------------------------------------- alignment
def test_noise_floor_matches_monte_carlo():
    for D in (50, 400):
        mc, se = al.monte_carlo_abs_cos(D, n=20000, seed=D)
        assert abs(mc - al.noise_floor_exact(D)) < 4 * se
        assert al.noise_floor(D) == pytest.approx(al.noise_floor_exact(D), rel=1.0 / D)
    assert al.noise_floor(25_165_824) == pytest.approx(1.59e-4, rel=0.01)
    assert al.noise_floor(3_147_776) == pytest.approx(4.5e-4, rel=0.01)


def test_alignment_stats_on_planted_vectors():
    D = 1000
    g = torch.Generator().manual_seed(0)
    v = torch.randn(D, generator=g, dtype=torch.float64)
    vh = v / v.norm()
    w = torch.randn(D, generator=g, dtype=torch.float64)
    w = w - (w @ vh) * vh
    w = w / w.norm()
    c = -0.3
    x = 5.0 * (c * vh + math.sqrt(1 - c * c) * w)  # ‖x‖ = 5, cos(x, v) = c
    s = al.alignment_stats(x, 3.0 * v)
    assert s["cos"] == pytest.approx(c, abs=1e-12)
    assert s["abs_cos"] == pytest.approx(0.3) and s["par_frac"] == pytest.approx(0.3)
    assert s["perp_frac"] == pytest.approx(math.sqrt(1 - 0.09))
    assert s["perp_frac"] == pytest.approx(perpendicular_fraction_direct(x, v), abs=1e-12)
    assert s["proj"] == pytest.approx(5.0 * c) and s["norm"] == pytest.approx(5.0)
    assert al.alignment_stats(torch.zeros(D), v)["cos"] == 0.0
    assert "g_cos" in al.alignment_stats(x, v, prefix="g_")


def test_sign_flip_detection():
    steps = [100, 300, 500, 700, 900, 1100]
    vals = [0.3, 0.2, 0.1, -0.1, -0.2, -0.3]
    assert al.zero_crossings(steps, vals) == [pytest.approx(600.0)]
    assert al.persistent_zero_crossing(steps, vals) == pytest.approx(600.0)
    noisy = [0.3, -0.01, 0.2, 0.1, -0.1, -0.2]  # single-point blip at 300
    assert len(al.zero_crossings(steps, noisy)) == 3
    assert al.persistent_zero_crossing(steps, noisy, min_run=2) == pytest.approx(800.0)
    assert al.persistent_zero_crossing(steps, [0.1, 0.2, 0.3, 0.1, 0.2, 0.4]) is None


def test_per_sample_methods_agree_and_auto_choice():
    model = tiny_gpt()
    batch = make_batch()
    V = torch.randn(3, trunk.subset_dim(model), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    q_jvp = fi.rayleigh_per_sample(model, batch, V, 2.0, method="jvp")
    q_exp = fi.rayleigh_per_sample(model, batch, V, 2.0, method="explicit", sample_chunk=4)
    q_auto = fi.rayleigh_per_sample(model, batch, V, 2.0, method="auto")
    assert rel(q_exp, q_jvp) < 1e-6 and rel(q_auto, q_jvp) < 1e-6
    assert fi.choose_per_sample_method("auto", 32, 98_304) == "explicit"
    assert fi.choose_per_sample_method("auto", 64, 25_165_824) == "jvp"
    with pytest.raises(ValueError):
        fi.choose_per_sample_method("fast", 1, 1)
