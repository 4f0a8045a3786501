"""Composite loss and schedules (PAPER_MAP §3, §3.1, §8)."""

import math

import pytest
import torch
import torch.nn.functional as F

from backbone_lab.objective import composite_loss, lambda_at, lr_at, per_sample_composite_loss


def test_lr_schedule_matches_reference_values():
    # PAPER_MAP §8: values in the reference's committed CSV
    assert lr_at(1, 1e-3, 1500, 10000) == pytest.approx(6.667e-7, rel=1e-3)
    assert lr_at(200, 1e-3, 1500, 10000) == pytest.approx(1.333e-4, rel=1e-3)
    assert lr_at(1500, 1e-3, 1500, 10000) == pytest.approx(1e-3)
    assert lr_at(4000, 1e-3, 1500, 10000) == pytest.approx(8.013e-4, rel=1e-3)
    for step in (8400, 9000, 10000):
        assert lr_at(step, 1e-3, 1500, 10000) == pytest.approx(1e-4)


def test_lambda_schedule_switches_at_4000():
    sched = [(0, 2.0), (4000, 4.0)]
    assert lambda_at(1, sched) == 2.0 and lambda_at(3999, sched) == 2.0
    assert lambda_at(4000, sched) == 4.0 and lambda_at(10000, sched) == 4.0


def test_composite_loss_against_hand_computation():
    torch.manual_seed(0)
    B, T, V = 3, 5, 7
    logits = torch.randn(B, T, V)
    targets = torch.randint(0, V, (B, T))
    targets[2, 3:] = -100  # masked padding
    probe = torch.zeros(B, T, dtype=torch.bool)
    probe[1, 4] = probe[0, 2] = True
    parts = composite_loss(logits, targets, probe, lam=2.0)
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).clamp_min(0), reduction="none").view(B, T)
    lm_mask = (targets != -100) & ~probe
    expected_lm = ce[lm_mask].mean()
    expected_probe = ce[probe].mean()
    torch.testing.assert_close(parts.lm, expected_lm)
    torch.testing.assert_close(parts.probe, expected_probe)
    torch.testing.assert_close(parts.loss, expected_lm + 2.0 * expected_probe)
    assert parts.n_lm == int(lm_mask.sum()) and parts.n_probe == 2
    # no probe tokens -> L_probe = 0
    none = composite_loss(logits, targets, torch.zeros_like(probe), lam=2.0)
    assert none.probe.item() == 0.0 and math.isclose(none.loss.item(), none.lm.item())
    # per-sample version: sequence 1 alone
    per = per_sample_composite_loss(logits, targets, probe, lam=2.0)
    seq1 = composite_loss(logits[1:2], targets[1:2], probe[1:2], lam=2.0)
    torch.testing.assert_close(per[1], seq1.loss)
