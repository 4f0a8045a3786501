"""The codeword probe task: templates, answer-span location and example assembly (PAPER_MAP §2.4–2.6).

An example is ``L = seq_len + 1`` tokens, returned as the batch dict of docs/ARCHITECTURE.md:
``input_ids = tokens[0:T]``, ``targets = tokens[1:T+1]`` (int64, ``-100`` = ignored) and
``probe_mask`` (bool) True at the target positions whose target is an answer token.

Padding (PAPER_MAP §2.2): sequences shorter than L are right-padded with EOS. With
``mask_padding=True`` every target from the first padded one on is ``-100`` (the rule of the
reference's post-paper fix, commit 0d65b15: the model is not trained to emit EOS after a story);
``mask_padding=False`` keeps padded targets (the behaviour of the paper's runs).

All functions here are pure: randomness comes in as a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import DataError
from .tokenizer import TextTokenizer

# (key sentence, query sentence); the answer is the codeword at the end of the query (§2.4).
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("The secret code is {C}.", "What is the secret code? {C}"),
    ("Remember the word {C}.", "What was the word? {C}"),
    ("The special word is {C}.", "What is the special word? {C}"),
    ("The password is {C}.", "What is the password? {C}"),
    ("The magic word is {C}.", "The magic word was {C}"),
)
MIN_PROBE_BUDGET = 10  # §2.5 step 3: fall back to an LM example below this many free tokens
EVAL_PREFIX_RANGE = (2, 10)  # §2.6: filler tokens before the key sentence, inclusive


def locate_answer(tokenizer: TextTokenizer, query: str, answer: str) -> tuple[list[int], int]:
    """Token ids of ``query`` and the number ``n`` of its trailing tokens that spell ``answer``.

    ``query`` must end with ``answer``. The span is found from character offsets (tokens whose
    span ends after the answer's first character) and checked: it must not start before the
    preceding space, must decode to the answer and must have as many tokens as ``" " + answer``
    encoded alone (PAPER_MAP §2.3 caveat, W7).
    """
    if not query.endswith(answer):
        raise ValueError(f"query {query!r} does not end with {answer!r}")
    ids, offsets = tokenizer.encode_with_offsets(query)
    c0 = len(query) - len(answer)
    first = next(k for k, (_, end) in enumerate(offsets) if end > c0)
    n = len(ids) - first
    if offsets[first][0] < c0 - 1 or (offsets[first][0] == c0 - 1 and query[c0 - 1] != " "):
        raise DataError(f"answer {answer!r} is merged with the text before it in {query!r}")
    if tokenizer.decode(ids[first:]).strip() != answer.strip():
        raise DataError(f"answer span of {query!r} decodes to {tokenizer.decode(ids[first:])!r}")
    if n != len(tokenizer.encode(" " + answer)):
        raise DataError(f"answer {answer!r} spans {n} tokens in context but {len(tokenizer.encode(' ' + answer))} alone")
    return ids, n


@dataclass(frozen=True)
class ProbeItem:
    """Pre-tokenised key and query of one (template, codeword); answer = last ``n_answer`` query tokens."""

    key: np.ndarray  # (k,) int64
    query: np.ndarray  # (q,) int64
    n_answer: int


class ProbeBank:
    """Key/query token ids for every (template, codeword), computed once (workers never tokenise)."""

    def __init__(self, tokenizer: TextTokenizer, codewords: Sequence[str], templates=TEMPLATES):
        if not codewords:
            raise DataError("the probe task needs at least one codeword (data.n_codewords >= 1)")
        self.codewords = list(codewords)
        self.templates = tuple(templates)
        self.items: list[list[ProbeItem]] = []
        answer_ids: set[int] = set()
        for key_t, query_t in self.templates:
            row = []
            for c in self.codewords:
                q_ids, n = locate_answer(tokenizer, query_t.format(C=c), c)
                answer_ids.update(q_ids[-n:])
                row.append(ProbeItem(np.asarray(tokenizer.encode(key_t.format(C=c)), dtype=np.int64),
                                     np.asarray(q_ids, dtype=np.int64), n))
            self.items.append(row)
        self.answer_token_ids = frozenset(answer_ids)
        self.max_key_len = max(len(it.key) for row in self.items for it in row)
        self.max_query_len = max(len(it.query) for row in self.items for it in row)

    @property
    def n_codewords(self) -> int:
        return len(self.codewords)

    @property
    def n_templates(self) -> int:
        return len(self.templates)

    def item(self, template: int, codeword: int) -> ProbeItem:
        return self.items[template][codeword]


def pack_example(tokens: np.ndarray, seq_len: int, eos_id: int, mask_padding: bool = True,
                 answer_start: int | None = None, n_answer: int = 0) -> dict[str, torch.Tensor]:
    """Pad ``tokens`` (n <= seq_len+1 real tokens) with EOS and build the batch dict.

    ``answer_start``: index in ``tokens`` of the first answer token; the probe mask marks target
    positions ``answer_start-1 .. answer_start+n_answer-2`` (shift -1). Shapes: (seq_len,).
    """
    L = seq_len + 1
    real = len(tokens)
    if real > L:
        raise ValueError(f"{real} tokens do not fit into seq_len+1={L}")
    buf = np.full(L, eos_id, dtype=np.int64)
    buf[:real] = tokens
    targets = buf[1:].copy()
    if mask_padding and real < L:
        targets[max(real - 1, 0):] = -100
    mask = np.zeros(seq_len, dtype=bool)
    if answer_start is not None and n_answer > 0:
        if answer_start < 1 or answer_start + n_answer > real:
            raise ValueError("answer span outside the real tokens")
        mask[answer_start - 1 : answer_start - 1 + n_answer] = True
    return {"input_ids": torch.from_numpy(buf[:-1].copy()), "targets": torch.from_numpy(targets),
            "probe_mask": torch.from_numpy(mask)}


def make_lm_example(doc: np.ndarray, seq_len: int, eos_id: int, rng: np.random.Generator | None,
                    mask_padding: bool = True) -> dict[str, torch.Tensor]:
    """Plain LM example (§2.2): random crop of seq_len+1 tokens (first ones if ``rng`` is None), or EOS pad."""
    L = seq_len + 1
    if len(doc) > L:
        start = int(rng.integers(0, len(doc) - L + 1)) if rng is not None else 0
        doc = doc[start : start + L]
    return pack_example(doc, seq_len, eos_id, mask_padding)


def make_train_probe_example(doc: np.ndarray, bank: ProbeBank, rng: np.random.Generator, seq_len: int,
                             eos_id: int, gap_range: tuple[int, int], mask_padding: bool = True):
    """Training probe example with story text as filler (§2.5), or None if it does not fit.

    Draw order: codeword, template, gap g ~ U{lo..hi}, prefix_len ~ U{2..max(3, budget//3)}.
    Sequence = story[:p] + key + story[p:p+g] (EOS-padded) + query + story[p+g:], cut to seq_len+1.
    """
    L = seq_len + 1
    c = int(rng.integers(bank.n_codewords))
    t = int(rng.integers(bank.n_templates))
    g = int(rng.integers(gap_range[0], gap_range[1] + 1))
    it = bank.item(t, c)
    budget = L - (len(it.key) + g + len(it.query))
    if budget < MIN_PROBE_BUDGET:
        return None
    p = min(int(rng.integers(2, max(3, budget // 3) + 1)), len(doc))
    middle = doc[p : p + g]
    if len(middle) < g:
        middle = np.concatenate([middle, np.full(g - len(middle), eos_id, dtype=np.int64)])
    seq = np.concatenate([doc[:p], it.key, middle, it.query, doc[p + g :]])[:L]
    answer_start = p + len(it.key) + g + len(it.query) - it.n_answer
    return pack_example(seq, seq_len, eos_id, mask_padding, answer_start, it.n_answer)


def make_eval_probe_example(bank: ProbeBank, rng: np.random.Generator, seq_len: int, eos_id: int,
                            gap_range: tuple[int, int], filler_pool: np.ndarray,
                            prefix_range: tuple[int, int] = EVAL_PREFIX_RANGE, mask_padding: bool = True):
    """Evaluation probe example with random token fillers (§2.6).

    Draw order: codeword, template, gap, prefix_len ~ U{prefix_range}, p+g fillers from ``filler_pool``.
    Sequence = fillers[:p] + key + fillers[p:p+g] + query, EOS-padded.
    """
    c = int(rng.integers(bank.n_codewords))
    t = int(rng.integers(bank.n_templates))
    g = int(rng.integers(gap_range[0], gap_range[1] + 1))
    p = int(rng.integers(prefix_range[0], prefix_range[1] + 1))
    fill = filler_pool[rng.integers(0, len(filler_pool), size=p + g)].astype(np.int64)
    it = bank.item(t, c)
    seq = np.concatenate([fill[:p], it.key, fill[p:], it.query])
    answer_start = len(seq) - it.n_answer
    return pack_example(seq, seq_len, eos_id, mask_padding, answer_start, it.n_answer)


def filler_pool(vocab_size: int, eos_id: int, exclude: Sequence[int] = (), lo: int = 100, hi: int = 5000) -> np.ndarray:
    """Filler token ids for eval probes: ``[lo, min(hi, V-1)]`` minus EOS and ``exclude`` (answer tokens).

    PAPER_MAP §2.6 draws U{100..5000} from the 50,257-token vocabulary; for small vocabularies the
    range is clipped to the vocabulary (and ``lo`` lowered to V//8 if nothing would be left).
    Excluding the codeword tokens keeps fillers from containing a competing "answer".
    """
    hi = min(hi, vocab_size - 1)
    if lo > hi:
        lo = vocab_size // 8
    bad = set(exclude) | {eos_id}
    pool = np.array([i for i in range(lo, hi + 1) if i not in bad], dtype=np.int64)
    if len(pool) == 0:
        raise DataError(f"empty filler range [{lo}, {hi}] for vocab_size={vocab_size}")
    return pool


def fit_gap_range(gaps: tuple[int, int], seq_len: int, bank: ProbeBank,
                  prefix_max: int = EVAL_PREFIX_RANGE[1], policy: str = "scale"):
    """Gap range that fits eval examples into seq_len+1 tokens; returns ``(lo, hi), note``.

    The longest eval example has ``prefix_max + max|key| + g + max|query|`` tokens. If ``hi`` does
    not fit, ``policy`` decides: "scale" multiplies both ends by fit/hi (keeps the lo/hi ratio,
    e.g. [80, 200] -> [38, 95] at seq_len 128), "clip" lowers hi (and lo if needed) to the fit,
    "error" raises. ``note`` is None when nothing changed, else a one-line explanation.
    """
    lo, hi = int(gaps[0]), int(gaps[1])
    if not 0 <= lo <= hi:
        raise DataError(f"bad gap range {list(gaps)}: need 0 <= lo <= hi")
    fit = seq_len + 1 - prefix_max - bank.max_key_len - bank.max_query_len
    if hi <= fit:
        return (lo, hi), None
    if fit < 1 or policy == "error":
        raise DataError(f"gap range {list(gaps)} does not fit seq_len={seq_len} (max gap {fit}); lower the gaps")
    if policy == "scale":
        new = (max(1, int(round(lo * fit / hi))), fit)
    elif policy == "clip":
        new = (min(lo, fit), fit)
    else:
        raise DataError(f"unknown gap policy {policy!r}; use scale | clip | error")
    return new, f"gap range {[lo, hi]} does not fit seq_len={seq_len} (max gap {fit}); {policy}d to {list(new)}"
