"""Codewords for the probe task (PAPER_MAP §2.3) and their persisted, checksummed list.

Two pool rules (``data.codeword_rule``); both end the same way: the pool is sorted, shuffled with
``random.Random(codeword_seed)`` (default 42, independent of the run seed) and the first
``n_codewords`` are taken.

``ours`` (default; a deliberate deviation from the reference, fixing W7): a vocabulary entry whose
decoded text, stripped of spaces, is ASCII, uppercase, alphabetic and >= 4 letters long, and for
which ``" " + word`` encodes to exactly ONE token. The reference tests the bare word (no space)
although the answer always follows a space in the query; we test the form that actually occurs,
and the probe code still locates the answer span by offsets and asserts its length
(``probe.ProbeBank``). As in the reference, if that pool is smaller than ``n_codewords`` a
fallback pass lowers the length to >= 3 (same test): on GPT-2's BPE the >= 4 pool has 373
words, so the paper's 512 codewords come from the >= 3 pool (1,028 words). No extra word list:
every codeword is one token in the query.

``legacy``: the authors' ``find_single_token_codewords`` as PAPER_MAP §2.3 describes it, but
deterministic (candidates sorted before anything depends on their order, not in hash order):
raw vocabulary strings stripped of leading "Ġ"/spaces, uppercase, alphabetic, >= 4 letters, the
*bare* word one token; if fewer than ``n_codewords``, a fallback pass adds >= 3-letter words whose
``" " + word`` is one token; then ``LEGACY_EXTRA_WORDS`` whose bare form is <= 2 tokens. Its
codewords can be 2+ tokens after a space (the probe sizes their answer span from the context).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

from backbone_lab.durable import atomic_write_json

from .errors import DataError
from .tokenizer import TextTokenizer

CODEWORDS_FILE = "codewords.json"
CODEWORD_RULES = ("ours", "legacy")
MIN_LEN, FALLBACK_MIN_LEN = 4, 3  # PAPER_MAP §2.3: >= 4 letters, fallback pass >= 3
# Stand-in for the reference's "~60 extra uppercase words (ALPHA, BETA, ..., ZEBRA)": PAPER_MAP §2.3
# names only those three, so the other 57 are our choice (sorted, ending with ZEBRA).
LEGACY_EXTRA_WORDS = (
    "ALPHA", "AMBER", "ANCHOR", "APPLE", "ARROW", "BETA", "BRAVO", "CANDLE", "CASTLE", "CEDAR",
    "CHARLIE", "COBALT", "COMET", "CORAL", "DELTA", "EAGLE", "ECHO", "EMBER", "FALCON", "FOREST",
    "GAMMA", "GARNET", "GLACIER", "HARBOR", "HAZEL", "IVORY", "JADE", "JASPER", "KAPPA", "KESTREL",
    "LAMBDA", "LANTERN", "LEMON", "MAPLE", "MARBLE", "MEADOW", "NEBULA", "OMEGA", "ONYX", "ORBIT",
    "PEPPER", "PLANET", "QUARTZ", "RAVEN", "RIVER", "SIGMA", "SILVER", "SPARROW", "TANGO", "THETA",
    "TIGER", "TULIP", "VELVET", "VIOLET", "WALNUT", "WILLOW", "XENON", "YELLOW", "YONDER", "ZEBRA",
)


def _n_tokens(tokenizer: TextTokenizer, texts: Sequence[str]) -> list[int]:
    return [len(ids) for ids in tokenizer.encode_batch(list(texts))]


def _uppercase_vocab_words(tokenizer: TextTokenizer, min_len: int) -> list[str]:
    """Sorted distinct decoded vocabulary entries, stripped of spaces, that are ASCII uppercase
    alphabetic words of >= ``min_len`` letters."""
    ids = sorted(set(tokenizer.get_vocab().values()))
    words = {w.strip() for w in tokenizer.tok.decode_batch([[i] for i in ids], skip_special_tokens=False)}
    return sorted(w for w in words if len(w) >= min_len and w.isascii() and w.isalpha() and w.isupper())


def _one_token_after_space(tokenizer: TextTokenizer, words: Sequence[str]) -> list[str]:
    return [w for w, n in zip(words, _n_tokens(tokenizer, [" " + w for w in words])) if n == 1]


def codeword_candidates(tokenizer: TextTokenizer, n_codewords: int = 0) -> list[str]:
    """Sorted pool of rule ``ours`` (module docstring); the >= 3 fallback only below ``n_codewords``."""
    pool = _one_token_after_space(tokenizer, _uppercase_vocab_words(tokenizer, MIN_LEN))
    if len(pool) < n_codewords:
        pool = _one_token_after_space(tokenizer, _uppercase_vocab_words(tokenizer, FALLBACK_MIN_LEN))
    return pool


def legacy_codeword_candidates(tokenizer: TextTokenizer, n_codewords: int) -> list[str]:
    """Sorted pool of rule ``legacy``: the reference's ``find_single_token_codewords`` (module docstring)."""
    stripped = sorted({token.lstrip("Ġ ") for token in tokenizer.get_vocab()})

    def uppercase(min_len: int) -> list[str]:
        return [w for w in stripped if len(w) >= min_len and w.isupper() and w.isalpha()]

    words = uppercase(MIN_LEN)
    pool = {w for w, n in zip(words, _n_tokens(tokenizer, words)) if n == 1}
    if len(pool) < n_codewords:
        pool.update(_one_token_after_space(tokenizer, uppercase(FALLBACK_MIN_LEN)))
    extras = [w for w in LEGACY_EXTRA_WORDS if w not in pool]
    pool.update(w for w, n in zip(extras, _n_tokens(tokenizer, extras)) if n <= 2)
    return sorted(pool)


def select_codewords(tokenizer: TextTokenizer, n_codewords: int, codeword_seed: int = 42,
                     rule: str = "ours") -> list[str]:
    """First ``n_codewords`` of rule ``rule``'s sorted pool shuffled by ``random.Random(codeword_seed)``."""
    if rule == "ours":
        pool = codeword_candidates(tokenizer, n_codewords)
    elif rule == "legacy":
        pool = legacy_codeword_candidates(tokenizer, n_codewords)
    else:
        raise DataError(f"unknown data.codeword_rule={rule!r}; use {' | '.join(CODEWORD_RULES)}")
    if len(pool) < n_codewords:
        raise DataError(
            f"only {len(pool)} codewords (rule {rule}) in {tokenizer.name} but data.n_codewords="
            f"{n_codewords}; lower data.n_codewords or raise data.vocab_size"
        )
    random.Random(codeword_seed).shuffle(pool)
    return pool[:n_codewords]


def codewords_sha256(codewords: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(codewords)).encode("utf-8")).hexdigest()


def save_codewords(run_dir: str | Path, codewords: Sequence[str]) -> Path:
    """Write ``<run_dir>/codewords.json`` = {codewords, count, sha256}; keep an identical file.

    Raises ``DataError`` if the run dir already holds a *different* list (e.g. resuming a run
    with a changed tokenizer or codeword config).
    """
    path = Path(run_dir) / CODEWORDS_FILE
    existing = load_codewords(run_dir)
    if existing is not None:
        if list(existing) != list(codewords):
            raise DataError(
                f"{path} holds a different codeword list (sha256 {codewords_sha256(existing)[:12]} "
                f"vs {codewords_sha256(codewords)[:12]}); the data config changed - use a new run dir"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"codewords": list(codewords), "count": len(codewords), "sha256": codewords_sha256(codewords)}
    return atomic_write_json(path, doc)


def load_codewords(run_dir: str | Path) -> list[str] | None:
    """The checksum-verified list in ``<run_dir>/codewords.json``, or None if there is none."""
    path = Path(run_dir) / CODEWORDS_FILE
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    words = doc.get("codewords")
    if not isinstance(words, list) or doc.get("count") != len(words) or doc.get("sha256") != codewords_sha256(words):
        raise DataError(f"{path} is corrupt (count/sha256 do not match its codeword list)")
    return words
