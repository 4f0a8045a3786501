"""SGDW (PAPER_MAP §4.1 run C′): decoupled weight decay applied by hand after each step."""

from __future__ import annotations

import pytest
import torch

from backbone_lab.optim import SGDW


def _two_groups(lr=0.1, wd=0.5, momentum=0.9, nesterov=True):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ln = torch.nn.Parameter(torch.tensor([3.0]))
    opt = SGDW([{"params": [w]}, {"params": [ln], "weight_decay": 0.0}], lr=lr, momentum=momentum,
               nesterov=nesterov, weight_decay=wd)
    return w, ln, opt


def test_sgdw_matches_hand_computation():
    lr, wd, mu = 0.1, 0.5, 0.9
    w, ln, opt = _two_groups(lr, wd, mu)
    g = torch.tensor([0.5, 0.25])
    theta = torch.tensor([1.0, -2.0])
    theta_ln = torch.tensor([3.0])
    buf = None
    for _ in range(3):
        w.grad = g.clone()
        ln.grad = torch.tensor([1.0])
        opt.step()
        # by hand: Nesterov SGD without an L2 term, then theta <- (1 - lr * wd) * theta
        buf = g.clone() if buf is None else mu * buf + g
        theta = (theta - lr * (g + mu * buf)) * (1 - lr * wd)
        buf_ln = torch.tensor([1.0]) if _ == 0 else mu * buf_ln + 1.0
        theta_ln = theta_ln - lr * (1.0 + mu * buf_ln)  # no-decay group: no shrink
    torch.testing.assert_close(w.detach(), theta, rtol=0, atol=1e-6)
    torch.testing.assert_close(ln.detach(), theta_ln, rtol=0, atol=1e-6)


def test_sgdw_uses_the_scheduled_lr_and_no_l2_term():
    w, _, opt = _two_groups(lr=1.0, wd=0.5, momentum=0.0, nesterov=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.2)  # lr_t = 0.2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    w.grad = torch.zeros(2)  # zero gradient: only the decoupled decay moves theta
    opt.step()
    sched.step()
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0]) * (1 - 0.2 * 0.5))
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)  # SGD itself adds no wd * theta
    assert [g["decoupled_weight_decay"] for g in opt.param_groups] == [0.5, 0.0]


def test_sgdw_state_dict_round_trip_keeps_decoupled_rate():
    w, ln, opt = _two_groups()
    w.grad, ln.grad = torch.ones(2), torch.ones(1)
    opt.step()
    w2, ln2, opt2 = _two_groups(wd=0.0)
    opt2.load_state_dict(opt.state_dict())
    assert [g["decoupled_weight_decay"] for g in opt2.param_groups] == [0.5, 0.0]


def test_sgd_l2_differs_from_sgdw():
    """torch.optim.SGD(weight_decay) (runs B, C: L2 through the momentum) is not SGDW (C′)."""
    p1 = torch.nn.Parameter(torch.tensor([1.0]))
    p2 = torch.nn.Parameter(torch.tensor([1.0]))
    l2 = torch.optim.SGD([p1], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5)
    dw = SGDW([p2], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5)
    for _ in range(3):
        p1.grad, p2.grad = torch.tensor([0.3]), torch.tensor([0.3])
        l2.step()
        dw.step()
    assert abs(p1.item() - p2.item()) > 1e-3


def test_sgdw_rejects_negative_decay():
    with pytest.raises(ValueError):
        SGDW([torch.nn.Parameter(torch.zeros(1))], weight_decay=-1.0)
