"""Tokenizers: a byte-level BPE trained on the corpus (cached on disk) or a pretrained one.

SPEC §2.1: the paper uses the GPT-Neo byte-level BPE (|V| = 50,257, EOS ``<|endoftext|>``).
Offline and for tiny models we train a byte-level BPE on the training corpus instead. So that
the probe task has codewords that are single tokens (SPEC §2.3), the BPE trainer also sees a
deterministic list of uppercase pseudo-words (``pseudo_words``), repeated often enough that
every " WORD" becomes one vocabulary entry. All encodes are plain (no special tokens added).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from .errors import DataError

EOS_TOKEN = "<|endoftext|>"
PRETRAINED_DEFAULT = "EleutherAI/gpt-neo-125M"
_BPE_RECIPE_VERSION = 1  # bump when the training recipe changes (invalidates cached tokenizers)


def texts_sha256(texts: Iterable[str]) -> str:
    """sha256 of a list of texts (length-prefixed UTF-8, so boundaries matter)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def pseudo_words(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sorted uppercase 4-letter pseudo-words (consonant-vowel syllable pairs).

    Words are built from a small seeded subset of ~sqrt(2n) syllables so that the BPE merges
    they need are shared (about n + 3*sqrt(2n) merges in total).
    """
    if n <= 0:
        return []
    syllables = sorted(c + v for c in "BDGKLMNPRSTVZ" for v in "AEIOU")  # 65 syllables
    if n > len(syllables) ** 2:
        raise DataError(f"at most {len(syllables) ** 2} pseudo-words available, asked for {n}")
    rng = random.Random(seed)
    k = min(len(syllables), max(4, math.ceil(math.sqrt(2 * n))))
    rng.shuffle(syllables)
    chosen = sorted(syllables[:k])
    words = sorted(a + b for a in chosen for b in chosen)
    rng.shuffle(words)
    return sorted(words[:n])


class TextTokenizer:
    """Thin wrapper around a ``tokenizers.Tokenizer`` with the few calls the data layer needs."""

    def __init__(self, tok, name: str):
        self.tok = tok
        self.name = name
        eos = tok.token_to_id(EOS_TOKEN)
        if eos is None:
            raise DataError(f"tokenizer {name!r} has no {EOS_TOKEN} token")
        self.eos_id: int = int(eos)
        self.vocab_size: int = int(tok.get_vocab_size(with_added_tokens=True))
        self.fingerprint: str = hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and their character spans ``(start, end)`` in ``text``."""
        enc = self.tok.encode(text, add_special_tokens=False)
        return enc.ids, [tuple(o) for o in enc.offsets]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (parallel in Rust)."""
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        """Raw vocabulary (token string -> id), including added tokens."""
        return self.tok.get_vocab(with_added_tokens=True)

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    def __repr__(self) -> str:
        return f"TextTokenizer({self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


def _new_bpe(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def train_bpe(texts: Sequence[str], vocab_size: int, extra_words: Sequence[str] = ()):
    """Train a byte-level BPE on ``texts`` so that every ``" " + w`` of ``extra_words`` is one token.

    Each extra word is shown ``R`` times (``R`` grows with the corpus size); if some word is
    still split, training is repeated once with 8x larger ``R`` (deterministic).
    """
    budget = vocab_size - 257  # merges left after the 256 bytes + EOS
    need = len(extra_words) + len({w[:2] for w in extra_words})  # lower bound: final + first-piece merges
    if need > budget:
        raise DataError(
            f"BPE vocab_size={vocab_size} too small for {len(extra_words)} single-token codewords "
            f"(needs > {need + 257}); raise data.vocab_size or lower data.n_codewords"
        )
    n_chars = sum(len(t) for t in texts)
    reps = max(1000, n_chars // 200)
    for _ in range(2):
        tok, trainer = _new_bpe(vocab_size)

        def stream():
            yield from texts
            for w in extra_words:
                yield (" " + w) * reps

        tok.train_from_iterator(stream(), trainer, length=len(texts) + len(extra_words))
        split = [w for w in extra_words if len(tok.encode(" " + w, add_special_tokens=False).ids) != 1]
        if not split:
            return tok
        reps *= 8
    raise DataError(
        f"BPE vocab_size={vocab_size} too small for {len(extra_words)} single-token codewords "
        f"({len(split)} split, e.g. {split[0]!r}); raise data.vocab_size or lower data.n_codewords"
    )


def bpe_cache_key(corpus_sha: str, vocab_size: int, extra_words: Sequence[str]) -> str:
    payload = json.dumps([_BPE_RECIPE_VERSION, corpus_sha, int(vocab_size), list(extra_words)])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_or_train_bpe(
    texts: Sequence[str],
    vocab_size: int,
    cache_dir: str | Path,
    n_pseudo_words: int = 64,
    pseudo_seed: int = 0,
    corpus_sha: str | None = None,
) -> TextTokenizer:
    """BPE tokenizer for ``texts``, cached as ``<cache_dir>/tokenizers/bpe-<key>.json``.

    key = sha256(corpus sha256, vocab_size, pseudo-word list, recipe version).
    """
    if vocab_size < 300:
        raise DataError(f"data.vocab_size={vocab_size} is too small for a byte-level BPE (need >= 300)")
    words = pseudo_words(n_pseudo_words, pseudo_seed)
    key = bpe_cache_key(corpus_sha or texts_sha256(texts), vocab_size, words)
    path = Path(cache_dir) / "tokenizers" / f"bpe-{key}.json"
    from tokenizers import Tokenizer

    if path.exists():
        return TextTokenizer(Tokenizer.from_file(str(path)), name=f"bpe-{key}")
    tok = train_bpe(texts, vocab_size, words)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)  # atomic: concurrent builders write identical content
    return TextTokenizer(Tokenizer.from_file(str(path)), name=f"bpe-{key}")


def _from_vocab_merges(name: str, revision: str):
    """GPT-2-style repos without ``tokenizer.json``: byte-level BPE from vocab.json + merges.txt."""
    from huggingface_hub import hf_hub_download
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = hf_hub_download(name, "vocab.json", revision=revision)
    merges = hf_hub_download(name, "merges.txt", revision=revision)
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS_TOKEN])
    return tok


def load_pretrained_tokenizer(name: str = PRETRAINED_DEFAULT, revision: str = "main") -> TextTokenizer:
    """A pretrained tokenizer from the Hugging Face hub (or its local cache): the repo's
    ``tokenizer.json`` or else its GPT-2-style ``vocab.json`` + ``merges.txt``."""
    from tokenizers import Tokenizer

    errors = []
    for load in (lambda: Tokenizer.from_pretrained(name, revision=revision),
                 lambda: _from_vocab_merges(name, revision)):
        try:
            return TextTokenizer(load(), name=name)
        except Exception as exc:  # offline, unknown name, missing files
            errors.append(type(exc).__name__)
    raise DataError(
        f"cannot load pretrained tokenizer {name!r} ({', '.join(errors)}); offline? "
        f"use the trained one instead: data.tokenizer=bpe data.vocab_size=512"
    )
