"""Model shape, parameter counts and the canonical trunk (PAPER_MAP §1, §8)."""

import torch

from backbone_lab.model import GPT, ModelConfig, expected_num_parameters
from conftest import compose_config
from backbone_lab import trunk


def model_config(name: str, vocab: int) -> ModelConfig:
    """The shipped conf/model/<name>.yaml, composed and typed as training builds it."""
    from omegaconf import OmegaConf

    cfg = compose_config([f"model={name}"])
    return OmegaConf.to_object(cfg.model).with_vocab(vocab)


def test_paper_model_has_51_045_888_parameters():
    cfg = model_config("paper", 50257)
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_parameters() == 51_045_888 == expected_num_parameters(cfg)
    assert trunk.subset_dim(model, "trunk") == 25_165_824
    per_block = [n for n in trunk.subset_names(model) if n.startswith("blocks.0.")]
    assert sum(dict(model.named_parameters())[n].numel() for n in per_block) == 3_145_728
    assert trunk.subset_dim(model, "blocks_with_ln") == 8 * 3_147_776


def test_tiny_model_counts_and_tied_head():
    cfg = model_config("tiny", 512)
    model = GPT(cfg)
    assert model.num_parameters() == expected_num_parameters(cfg)
    assert model.lm_head.weight is model.tok_emb.weight
    # tied weight listed twice in state_dict, once in named_parameters
    assert "lm_head.weight" in model.state_dict()
    assert "lm_head.weight" not in dict(model.named_parameters())


def test_init_statistics_and_causality():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=300, n_layer=2, d_model=64, n_head=4, d_ff=128, seq_len=32))
    w = model.blocks[0].mlp.w_up.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert torch.all(model.blocks[0].ln1.weight == 1) and torch.all(model.blocks[0].ln1.bias == 0)
    x = torch.randint(0, 300, (2, 16))
    y = x.clone()
    y[:, 10:] = torch.randint(0, 300, (2, 6))
    with torch.no_grad():
        a, b = model(x), model(y)
    # changing future tokens never changes earlier logits
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_trunk_order_is_module_order_with_natural_block_sort():
    model = GPT(ModelConfig(vocab_size=50, n_layer=12, d_model=16, n_head=2, d_ff=32, seq_len=8))
    names = trunk.subset_names(model)
    assert names[:4] == [
        "blocks.0.attn.qkv.weight", "blocks.0.attn.out_proj.weight",
        "blocks.0.mlp.w_up.weight", "blocks.0.mlp.w_down.weight",
    ]
    blocks = [int(n.split(".")[1]) for n in names]
    assert blocks == sorted(blocks) and blocks[-1] == 11  # 10, 11 after 9 (not lexicographic)


def test_flatten_order_is_shared_by_params_and_grads():
    """<flatten(grad), flatten(dtheta)> equals the per-tensor sum (guards the reference bug PAPER_MAP W8)."""
    torch.manual_seed(1)
    model = GPT(ModelConfig(vocab_size=40, n_layer=2, d_model=16, n_head=2, d_ff=48, seq_len=8))
    before = {n: p.detach().clone() for n, p in trunk.named_subset(model).items()}
    x = torch.randint(0, 40, (3, 8))
    model(x).square().mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    after = trunk.named_subset(model)
    delta_flat = trunk.flatten_params(model) - trunk.flatten(before.values())
    grad_flat = trunk.flatten_grads(model)
    per_tensor = sum((after[n].grad * (after[n].detach() - before[n])).sum() for n in before)
    torch.testing.assert_close(torch.dot(grad_flat, delta_flat), per_tensor, rtol=1e-5, atol=1e-8)
    # unflatten inverts flatten
    back = trunk.unflatten(grad_flat, trunk.subset_shapes(model))
    for n, g in back.items():
        torch.testing.assert_close(g, after[n].grad)


def test_bad_config_is_rejected_clearly():
    import re

    import pytest

    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="model.norm='BatchNorm' is not one of LayerNorm | RMSNorm"):
        ModelConfig(norm="BatchNorm")
    with pytest.raises(ValueError, match="vocab_size is not set"):
        GPT(ModelConfig())


def test_component_names_come_from_one_table():
    """`ModelConfig` accepts exactly the names of `model_config.COMPONENT_CLASSES`, and the model
    builds the class that table names (a new norm or MLP is its class + one entry there)."""
    import re

    import pytest
    import torch.nn as nn

    from backbone_lab import model as model_module
    from backbone_lab.model_config import COMPONENT_CLASSES, POSITIONS

    base = dict(vocab_size=40, n_layer=1, d_model=16, n_head=2, d_ff=32, seq_len=8)
    assert model_module.component_class("norm", "RMSNorm") is nn.RMSNorm
    for norm, class_name in COMPONENT_CLASSES["norm"].items():
        model = GPT(ModelConfig(**base, norm=norm))
        cls = getattr(model_module, class_name)
        assert type(model.ln_f) is cls and type(model.blocks[0].ln1) is cls
    for mlp, class_name in COMPONENT_CLASSES["mlp"].items():
        assert type(GPT(ModelConfig(**base, mlp=mlp)).blocks[0].mlp) is getattr(model_module, class_name)
    for positions in POSITIONS:
        ModelConfig(**base, positions=positions)
    with pytest.raises(ValueError, match=re.escape("model.mlp='ReLU' is not one of GELU | SwiGLU")):
        ModelConfig(**base, mlp="ReLU")
