"""``python -m backbone_lab.sample <run> prompt="Once upon a time" [max_new_tokens=100] [temperature=0.8]
[top_k=50] [seed=0] [num_samples=1] [ckpt=last|STEP|PATH] [device=cpu] [stop_at_eos=true]``.

Text from a run's checkpoint and tokenizer (as nanoGPT's sample.py / `litgpt generate`):
autoregressive sampling with temperature and top-k (temperature 0: greedy), the context cropped
to the model's `seq_len`. The same seed gives the same text. Nothing is written. A bad run folder
or option ends in one line (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

USAGE = ('usage: python -m backbone_lab.sample <run_dir> prompt="Once upon a time" [max_new_tokens=100] '
         "[temperature=0.8] [top_k=50] [seed=0] [num_samples=1] [ckpt=last|STEP|PATH] [device=cpu] [stop_at_eos=true]")


@dataclass
class SampleOptions:
    prompt: str = "Once upon a time"
    max_new_tokens: int = 100
    temperature: float = 0.8  # 0: greedy (argmax)
    top_k: int | None = 50  # None / 0: the whole vocabulary
    seed: int = 0
    num_samples: int = 1
    ckpt: str = "last"
    device: str = "cpu"
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0 or self.num_samples < 1:
            raise ValueError("max_new_tokens must be >= 0 and num_samples >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: no limit), got {self.top_k}")


def generate(model, ids, max_new_tokens: int, temperature: float = 0.8, top_k: int | None = 50,
             generator=None, eos_id: int | None = None):
    """Token ids (1, T0 + n), n ≤ max_new_tokens, continuing `ids` (1, T0) int64 by sampling from
    softmax(logits / temperature) restricted to the top_k logits (temperature 0: argmax); the
    context fed to the model is the last `seq_len` tokens; stops after `eos_id` when given."""
    import torch

    seq_len = model.cfg.seq_len
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(ids[:, -seq_len:])[:, -1, :].float()  # (1, V)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            ids = torch.cat([ids, nxt.to(ids.device)], dim=1)
            if eos_id is not None and int(nxt) == eos_id:
                break
    return ids


def sample_run(run_dir, opts: SampleOptions | None = None) -> list[str]:
    """`num_samples` texts (prompt + continuation, decoded with the run's tokenizer)."""
    import torch

    from backbone_lab.run_model import load_run

    opts = opts or SampleOptions()
    loaded = load_run(run_dir, opts.ckpt, opts.device)
    tok = loaded.tokenizer
    prompt_ids = tok.encode(opts.prompt) or [tok.eos_id]
    generator = torch.Generator(device="cpu").manual_seed(int(opts.seed))
    texts = []
    for _ in range(opts.num_samples):
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=opts.device)
        out = generate(loaded.model, ids, opts.max_new_tokens, opts.temperature, opts.top_k or None,
                       generator if opts.device == "cpu" else None, tok.eos_id if opts.stop_at_eos else None)
        texts.append(tok.decode(out[0].tolist()))
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    from backbone_lab.run_model import run_cli

    def show(run_dir: str, opts: SampleOptions) -> None:
        if opts.device != "cpu":
            import torch

            torch.manual_seed(int(opts.seed))  # sampling on an accelerator draws from its default generator
        texts = sample_run(run_dir, opts)
        for i, text in enumerate(texts):
            if len(texts) > 1:
                print(f"--- sample {i + 1}")
            print(text)

    return run_cli(argv, USAGE, SampleOptions(), "sample", show)


if __name__ == "__main__":
    sys.exit(main())
