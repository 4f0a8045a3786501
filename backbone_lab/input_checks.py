"""Checks of what a run will read and need, done before any data preparation (one line each).

The typed configs already check types and ranges (`__post_init__`); these look outside them:
* local data files exist, are not empty, are text (no NUL bytes) and UTF-8 — `datasets` would
  otherwise fail minutes later with a traceback that does not name the file;
* one micro-batch fits the machine: a rough upper bound of the activation memory of
  `model.seq_len` × `data.micro_batch_size` (logits, attention, residual stream) against the
  memory available (`MemAvailable` on CPU, free memory of the GPU) — `model.seq_len=100000`
  would otherwise start and make no progress for many minutes.
"""

from __future__ import annotations

import os
from pathlib import Path

from backbone_lab.errors import ConfigError

_SNIFF_BYTES = 1 << 20


def check_text_file(path: str | os.PathLike, key: str) -> None:
    """Raise ConfigError unless `path` is a non-empty UTF-8 text file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}: {p} does not exist (or is not a file); give a path to a text/JSON file of stories")
    if p.stat().st_size == 0:
        raise ConfigError(f"{key}: {p} is empty; give a file with stories separated by blank lines")
    head = p.open("rb").read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise ConfigError(f"{key}: {p} is a binary file, not text; give a UTF-8 text or JSON file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the sniff boundary
            raise ConfigError(f"{key}: {p} is not UTF-8 (byte {err.start}: {head[err.start:err.start + 1]!r}); "
                              "convert it, e.g. iconv -t UTF-8") from None


def micro_batch_bytes(batch: int, seq_len: int, d_model: int, n_layer: int, n_head: int, vocab: int,
                      attention_matrix: bool) -> int:
    """Upper bound (bytes, fp32) of the activations one micro-batch keeps for backward:
    logits ×3 (logits, their fp32 softmax, the gradient), the residual stream ×16 per layer, and
    — where attention materialises its B·H·T² score matrix (the CPU's math kernel) — ×2 per layer."""
    logits = 3 * batch * seq_len * vocab * 4
    stream = 16 * n_layer * batch * seq_len * d_model * 4
    scores = 2 * n_layer * batch * n_head * seq_len * seq_len * 4 if attention_matrix else 0
    return logits + stream + scores


def available_bytes(on_gpu: bool) -> int | None:
    """Free memory of the device the run will use (None: unknown)."""
    if on_gpu:
        try:
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info()[0])
        except Exception:  # noqa: BLE001
            return None
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_inputs(conf: dict, accelerator: str = "cpu") -> None:
    """Every check of this module on the typed configs of a run (see `train.typed`)."""
    data, model = conf["data"], conf["model"]
    if ":" in data.source:  # a user source: importable now, not after minutes of setup
        from backbone_lab.data.corpus import load_source
        from backbone_lab.data.errors import DataError

        try:
            load_source(data.source)
        except DataError as err:
            raise ConfigError(str(err)) from None
    if data.source == "local":
        for i, f in enumerate(data.train_files):
            check_text_file(f, f"data.train_files[{i}]")
        for i, f in enumerate(data.val_files):
            check_text_file(f, f"data.val_files[{i}]")
    vocab = model.vocab_size or (50257 if data.tokenizer == "pretrained" else data.vocab_size)
    on_gpu = accelerator in ("gpu", "cuda")
    need = micro_batch_bytes(data.micro_batch_size, model.seq_len, model.d_model, model.n_layer, model.n_head,
                             vocab, attention_matrix=not on_gpu)
    have = available_bytes(on_gpu)
    if have is not None and need > 0.8 * have:
        raise ConfigError(
            f"model.seq_len={model.seq_len} with data.micro_batch_size={data.micro_batch_size} needs about "
            f"{need / 2**30:.1f} GiB of activations per micro-batch, more than the {have / 2**30:.1f} GiB available; "
            "lower them (train.accumulate keeps the batch)")
