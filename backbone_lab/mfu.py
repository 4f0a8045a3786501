"""Model FLOPs utilisation (MFU): the FLOPs a GPT training step needs, and the peak a GPU offers.

Training FLOPs per token (forward + backward), the PaLM / nanoGPT estimate:

    6·N + 12·L·T·d

* 6·N: every weight takes part in one matrix product per token (2 FLOPs forward, 4 backward).
  N counts the tied embedding once: that matrix is the output head's product (the input lookup
  costs nothing); the position table (T·d) is counted although it is a lookup too (0.3 % of the
  paper model).
* 12·L·T·d: attention scores QKᵀ and their weighted sum AV (2·2·T·d per token and layer
  forward, twice that backward); the half the causal mask could skip is counted.

MFU = tokens/s × FLOPs per token / the device's peak *dense bf16* FLOP/s — the same yardstick
for every precision, so an fp32 run's MFU says how far it is from what the chip could do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backbone_lab.model import ModelConfig

# (case-insensitive substring of torch.cuda.get_device_name(), dense bf16 TFLOP/s from the
# vendor's datasheet). First match wins: longer names come before names they contain.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),      # SXM ("NVIDIA H100 80GB HBM3")
    ("GH200", 989.0),
    ("H200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
    ("L4", 121.0),
)


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token of a GPT-family model (tied embeddings, learned positions)."""
    from backbone_lab.model import expected_num_parameters

    return model_flops_per_token(expected_num_parameters(cfg), cfg.n_layer, cfg.seq_len, cfg.d_model)


def model_flops_per_token(n_params: int, n_layer: int, seq_len: int, d_model: int) -> float:
    """6·N + 12·L·T·d training FLOPs per token, from a model's parameter count (each shared tensor once)."""
    return 6.0 * n_params + 12.0 * n_layer * seq_len * d_model


def peak_tflops(device_name: str, override: float | None = None) -> float | None:
    """Dense bf16 peak of `device_name` in TFLOP/s (`override` wins); None when unknown."""
    if override:
        return float(override)
    name = device_name.lower()
    for needle, tflops in PEAK_BF16_TFLOPS:
        if needle.lower() in name:
            return tflops
    return None


def mfu(tokens_per_s: float, cfg: ModelConfig | float, peak: float | None) -> float | None:
    """Fraction of the peak (0..1) or None when the peak is unknown; `cfg` is a model config or
    its FLOPs per token."""
    if not peak:
        return None
    per_token = cfg if isinstance(cfg, (int, float)) else flops_per_token(cfg)
    return tokens_per_s * per_token / (peak * 1e12)
