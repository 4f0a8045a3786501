"""The optimizer zoo: Muon(+AdamW), Adafactor, Lion, schedule-free AdamW (`conf/optimizer/`).

Every optimizer is built from its YAML like the CLI does and called with the three parameter
groups (trunk / matrix / vector) of a tiny GPT.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hydra.utils import instantiate

from backbone_lab.model import GPT, ModelConfig
from backbone_lab.optim import (
    MuonWithAdamW,
    ScheduleFreeAdamW,
    evaluation_weights,
    parameter_groups_by_kind,
    use_training_weights,
)
from backbone_lab.trunk import named_subset
from conftest import compose_config

ZOO = ["muon", "adafactor", "lion", "schedule_free_adamw"]
TINY = ModelConfig(vocab_size=64, n_layer=2, d_model=32, n_head=4, d_ff=64, seq_len=16)


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(TINY)


def fixed_batch(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (8, TINY.seq_len + 1), generator=torch.Generator().manual_seed(seed))


def lm_loss(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def train_steps(model, optimizer, batch, steps: int, scheduler=None) -> list[float]:
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = lm_loss(model, batch)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def from_yaml(name: str, model: GPT, **overrides):
    cfg = compose_config([f"optimizer={name}"] + [f"optimizer.{k}={v}" for k, v in overrides.items()])
    return instantiate(cfg.optimizer)(parameter_groups_by_kind(model))


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), f"{name} differs"


# -- parameter groups -------------------------------------------------------------------------
def test_parameter_groups_split_by_shape_and_place():
    model = tiny_gpt()
    matrix, trunk, vector = parameter_groups_by_kind(model)
    assert [g["kind"] for g in (trunk, matrix, vector)] == ["trunk", "matrix", "vector"]
    # trunk = exactly the canonical trunk (PAPER_MAP §1.3), in canonical order
    assert [id(p) for p in trunk["params"]] == [id(p) for p in named_subset(model, "trunk").values()]
    assert [id(p) for p in matrix["params"]] == [id(model.tok_emb.weight), id(model.pos_emb.weight)]  # head tied
    assert all(p.ndim == 1 for p in vector["params"]) and vector["weight_decay"] == 0.0
    everything = [id(p) for g in (trunk, matrix, vector) for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())


# -- every zoo YAML --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_yaml_instantiates_with_the_three_groups(name):
    model = tiny_gpt()
    opt = from_yaml(name, model)
    assert isinstance(opt, torch.optim.Optimizer)
    assert [g["kind"] for g in opt.param_groups] == ["matrix", "trunk", "vector"]
    assert opt.param_groups[2]["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] > 0
    sd = opt.state_dict()
    assert [g["kind"] for g in sd["param_groups"]] == ["matrix", "trunk", "vector"]


@pytest.mark.parametrize("name", ZOO)
def test_each_optimizer_decreases_the_loss_of_a_tiny_gpt(name):
    model = tiny_gpt()
    batch = fixed_batch()
    losses = train_steps(model, from_yaml(name, model), batch, 20)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.25, f"{name}: {losses[0]:.3f} -> {losses[-1]:.3f}"


# -- Muon + AdamW --------------------------------------------------------------------------------
def test_muon_with_adamw_is_muon_on_trunk_plus_adamw_on_the_rest():
    kw = dict(lr=3e-3, weight_decay=0.5)
    model, reference = tiny_gpt(), tiny_gpt()
    combined = MuonWithAdamW(parameter_groups_by_kind(model), **kw)
    matrix, trunk, vector = parameter_groups_by_kind(reference)
    muon = torch.optim.Muon([trunk], momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw", **kw)
    adamw = torch.optim.AdamW([matrix, vector], betas=(0.9, 0.95), eps=1e-8, **kw)
    batch = fixed_batch()
    for _ in range(3):
        for m in (model, reference):
            m.zero_grad()
            lm_loss(m, batch).backward()
        combined.step()
        muon.step()
        adamw.step()
    assert_same_params(model, reference)
    moved = [not torch.equal(p, q) for p, q in zip(model.parameters(), tiny_gpt().parameters())]
    assert all(moved)  # every group stepped (LayerNorms included)


def test_muon_one_param_groups_list_follows_the_lr_scheduler():
    model = tiny_gpt()
    opt = MuonWithAdamW(parameter_groups_by_kind(model), lr=1e-2, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0 if step == 0 else 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.0]
    before = copy.deepcopy(model)
    train_steps(model, opt, fixed_batch(), 1, sched)
    assert_same_params(model, before)  # lr 0: neither Muon, AdamW nor the decay moved anything
    assert [g["lr"] for g in opt.param_groups] == [5e-3, 5e-3, 5e-3]
    train_steps(model, opt, fixed_batch(), 1, sched)
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before.parameters()))
    # gradient clipping sees every parameter through the one list
    clipped = {id(p) for g in opt.param_groups for p in g["params"]}
    assert clipped == {id(p) for p in model.parameters()}


def test_muon_state_dict_round_trip_resumes_bit_for_bit():
    batch = fixed_batch()
    schedule = lambda step: min(1.0, (step + 1) / 4)  # noqa: E731 - a warmup, as in training

    def fresh(model):
        opt = MuonWithAdamW(parameter_groups_by_kind(model), lr=3e-3, weight_decay=0.5)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    straight = tiny_gpt()
    opt, sched = fresh(straight)
    train_steps(straight, opt, batch, 6, sched)

    first = tiny_gpt()
    opt, sched = fresh(first)
    train_steps(first, opt, batch, 3, sched)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)

    resumed = tiny_gpt(seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt, sched = fresh(resumed)
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    assert "momentum_buffer" in opt.state[resumed.blocks[0].attn.qkv.weight]  # Muon's state came back
    assert "exp_avg_sq" in opt.state[resumed.tok_emb.weight]  # and AdamW's
    train_steps(resumed, opt, batch, 3, sched)
    assert_same_params(resumed, straight)


def test_muon_without_kinds_is_adamw():
    """The older two-group call `[decay, no_decay]` (no `kind`): every group goes to AdamW."""
    model, reference = tiny_gpt(), tiny_gpt()

    def two_groups(m):
        decay = [p for p in m.parameters() if p.ndim >= 2]
        return [{"params": decay}, {"params": [p for p in m.parameters() if p.ndim < 2], "weight_decay": 0.0}]

    opt = MuonWithAdamW(two_groups(model), lr=1e-3, weight_decay=0.5)
    ref = torch.optim.AdamW(two_groups(reference), lr=1e-3, weight_decay=0.5, betas=(0.9, 0.95), eps=1e-8)
    train_steps(model, opt, fixed_batch(), 3)
    train_steps(reference, ref, fixed_batch(), 3)
    assert_same_params(model, reference)


def test_muon_rejects_a_vector_in_the_trunk_group():
    with pytest.raises(ValueError, match="2D"):
        MuonWithAdamW([{"params": [torch.nn.Parameter(torch.ones(3))], "kind": "trunk"}])


# -- Lion ------------------------------------------------------------------------------------------
def test_lion_follows_the_update_rule_of_its_paper():
    """Chen et al. 2023, Alg. 2: c = b1 m + (1-b1) g; θ ← θ − lr (sign(c) + λ θ); m ← b2 m + (1-b2) g."""
    model = tiny_gpt()
    opt = from_yaml("lion", model, lr=1e-3, weight_decay=0.7)
    lr, (b1, b2) = 1e-3, opt.param_groups[0]["betas"]
    batch = fixed_batch()
    theta = {p: p.detach().clone() for p in model.parameters()}
    wd = {p: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    m = {p: torch.zeros_like(p) for p in model.parameters()}
    for _ in range(3):  # from the second step on, the momentum is not zero
        grads = {}
        model.zero_grad()
        lm_loss(model, batch).backward()
        for p in model.parameters():
            g = p.grad.detach().clone()
            c = b1 * m[p] + (1 - b1) * g
            theta[p] = theta[p] - lr * (torch.sign(c) + wd[p] * theta[p])
            m[p] = b2 * m[p] + (1 - b2) * g
            grads[p] = g
        opt.step()
        for p in model.parameters():
            torch.testing.assert_close(p.detach(), theta[p], rtol=0, atol=1e-7)
    assert {wd[p] for p in model.parameters() if p.ndim == 1} == {0.0}  # LayerNorms not decayed


# -- Adafactor -------------------------------------------------------------------------------------
def test_adafactor_lr_is_a_relative_step_and_its_decay_is_scaled_by_lr():
    lr, wd = 1e-2, 0.05
    small = torch.nn.Parameter(torch.full((4, 6), 0.1))
    large = torch.nn.Parameter(torch.full((4, 6), 1.0))
    vector = torch.nn.Parameter(torch.full((6,), 0.5))
    cfg = compose_config(["optimizer=adafactor", f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}"])
    groups = [{"params": [small], "kind": "trunk"}, {"params": [large], "kind": "matrix"},
              {"params": [vector], "kind": "vector", "weight_decay": 0.0}]
    opt = instantiate(cfg.optimizer)(groups)
    # a zero gradient: only the decoupled decay moves the weights, by (1 - lr * wd), never the vector
    for p in (small, large, vector):
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(small.detach(), torch.full((4, 6), 0.1 * (1 - lr * wd)))
    torch.testing.assert_close(vector.detach(), torch.full((6,), 0.5))
    assert set(opt.state[small]) == {"step", "row_var", "col_var"} and "variance" in opt.state[vector]
    # the same gradient moves a 10x larger parameter 10x further: the step is relative to RMS(θ)
    opt = instantiate(cfg.optimizer)([{"params": [small, large], "weight_decay": 0.0}])
    g = torch.linspace(-1, 1, 24).reshape(4, 6)
    before = (small.detach().clone(), large.detach().clone())
    small.grad, large.grad = g.clone(), g.clone()
    opt.step()
    step_small, step_large = (small - before[0]).norm(), (large - before[1]).norm()
    torch.testing.assert_close(step_large / step_small, torch.tensor(10.0), rtol=1e-5, atol=0)


# -- schedule-free AdamW ----------------------------------------------------------------------------
def test_schedule_free_starts_in_training_mode():
    model = tiny_gpt()
    opt = from_yaml("schedule_free_adamw", model)
    assert all(g["train_mode"] for g in opt.param_groups)
    assert isinstance(opt, ScheduleFreeAdamW)
    train_steps(model, opt, fixed_batch(), 1)  # the package's own class would refuse to step


def test_evaluation_weights_swap_and_restore_exactly():
    model = tiny_gpt()
    opt = from_yaml("schedule_free_adamw", model)
    train_steps(model, opt, fixed_batch(), 5)
    beta1 = opt.param_groups[0]["betas"][0]
    y = [p.detach().clone() for p in model.parameters()]
    z = [opt.state[p]["z"].clone() for p in model.parameters()]
    with evaluation_weights(opt):
        x = [p.detach().clone() for p in model.parameters()]
        assert not any(g["train_mode"] for g in opt.param_groups)
        with evaluation_weights(opt):  # nested (e.g. a snapshot during an evaluation): no-op
            assert all(torch.equal(p, xi) for p, xi in zip(model.parameters(), x))
        assert all(torch.equal(p, xi) for p, xi in zip(model.parameters(), x))
    assert all(torch.equal(p, yi) for p, yi in zip(model.parameters(), y))  # bit for bit
    assert all(g["train_mode"] for g in opt.param_groups)
    assert all(not torch.equal(xi, yi) for xi, yi in zip(x, y))
    for xi, yi, zi in zip(x, y, z):  # y = (1 - β1) z + β1 x, i.e. x is the averaged iterate
        torch.testing.assert_close(yi, (1 - beta1) * zi + beta1 * xi, rtol=1e-5, atol=1e-6)


def test_evaluation_weights_is_a_no_op_for_other_optimizers():
    model = tiny_gpt()
    opt = from_yaml("muon", model)
    train_steps(model, opt, fixed_batch(), 2)
    before = copy.deepcopy(model)
    with evaluation_weights(opt):
        assert_same_params(model, before)
    with evaluation_weights(None):
        pass
    assert_same_params(model, before)


def test_evaluating_inside_training_does_not_change_the_run():
    batch = fixed_batch()
    plain, evaluated = tiny_gpt(), tiny_gpt()
    opt_plain, opt_eval = from_yaml("schedule_free_adamw", plain), from_yaml("schedule_free_adamw", evaluated)
    for _ in range(4):
        train_steps(plain, opt_plain, batch, 1)
        train_steps(evaluated, opt_eval, batch, 1)
        with evaluation_weights(opt_eval), torch.no_grad():
            lm_loss(evaluated, batch)
    assert_same_params(evaluated, plain)


def test_schedule_free_checkpoint_saved_at_evaluation_weights_resumes_bit_for_bit():
    """What `last.ckpt` holds (weights x, optimizer in eval mode) continues the run exactly."""
    batch = fixed_batch()
    straight = tiny_gpt()
    opt = from_yaml("schedule_free_adamw", straight)
    train_steps(straight, opt, batch, 6)

    first = tiny_gpt()
    opt = from_yaml("schedule_free_adamw", first)
    train_steps(first, opt, batch, 3)
    buffer = io.BytesIO()
    with evaluation_weights(opt):
        torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    assert not saved["opt"]["param_groups"][0]["train_mode"]

    resumed = tiny_gpt(seed=123)
    resumed.load_state_dict(saved["model"])  # the evaluation weights x
    opt = from_yaml("schedule_free_adamw", resumed)
    opt.load_state_dict(saved["opt"])
    use_training_weights(opt)  # before the first forward pass: back to y, exactly
    train_steps(resumed, opt, batch, 3)
    assert_same_params(resumed, straight)


# -- the experiment ------------------------------------------------------------------------------
def test_optimizer_zoo_tiny_sweeps_every_optimizer_under_one_constant_schedule():
    cfg = compose_config(["+experiment=optimizer_zoo_tiny"])
    from hydra import compose, initialize_config_dir

    from conftest import CONF

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        hydra_cfg = compose(config_name="config", overrides=["+experiment=optimizer_zoo_tiny"],
                            return_hydra_config=True)
    swept = str(hydra_cfg.hydra.sweeper.params.optimizer).split(",")
    assert swept == ["adamw", "sgd_tiny", "sgd_momentum", *ZOO]
    assert cfg.schedule.floor == 1.0 and cfg.train.max_steps == 1000 and cfg.model.name == "tiny"
    model = tiny_gpt()
    for name in swept:
        job = compose_config(["+experiment=optimizer_zoo_tiny", f"optimizer={name}"])
        opt = instantiate(job.optimizer)(parameter_groups_by_kind(model))
        assert opt.param_groups[2]["weight_decay"] == 0.0
