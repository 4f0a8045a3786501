"""Checks of what a run will read and need, done before any data preparation (one line each).

The typed configs already check types and ranges (`__post_init__`); these look outside them:
* local data files exist, are not empty, are text (no NUL bytes) and UTF-8 — `datasets` would
  otherwise fail minutes later with a traceback that does not name the file;
  a `.json` file parses, and no line of a text / `.jsonl` file is longer than `MAX_LINE_BYTES`
  (a 51 MB single-line file would otherwise become one enormous "story");
* one micro-batch fits the machine: a rough upper bound of the activation memory of
  `model.seq_len` × `data.micro_batch_size` (logits, attention, residual stream) against the
  memory available (`MemAvailable` on CPU, free memory of the GPU) — `model.seq_len=100000`
  would otherwise start and make no progress for many minutes;
* the run's own settings (`check_run_settings`): no unknown top-level key, an integer seed,
  `resume` never/auto, folder names that stay under the output root and fit a file system, a
  run folder that can be created, finite optimizer values, no more CPU ranks than cores, and an
  `init_from` / `init_step` that name a real checkpoint — all before any folder is made.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import stat
import tempfile
from pathlib import Path

from backbone_lab.data.sources import is_user_source, user_source
from backbone_lab.errors import ConfigError

_SNIFF_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20  # a story (a record) is a few KB; a line of more than 1 MiB is not one
NAME_MAX_BYTES = 255      # longest file name of common Linux file systems
CONFIG_FILE = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"


def check_text_file(path: str | os.PathLike, key: str) -> None:
    """Raise ConfigError unless `path` is a non-empty UTF-8 text file."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_file():  # a FIFO or a device would block the reader: never opened
        raise ConfigError(f"{key}: {p} is {_kind(p)}, not a regular file; give a path to a text/JSON file of stories")
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
    if p.suffix.lower() == ".json":
        _check_json(p, key)
    else:
        longest = _longest_line(p)
        if longest > MAX_LINE_BYTES:
            raise ConfigError(f"{key}: {p} has a line of {longest / 1e6:.1f} MB (at most {MAX_LINE_BYTES >> 20} MiB: "
                              "stories are separated by blank lines, JSON lines by newlines); split the file")


def _kind(p: Path) -> str:
    mode = p.stat().st_mode
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def _longest_line(p: Path, chunk: int = 8 << 20) -> int:
    """Length in bytes of the longest line of a file (streamed: memory stays at `chunk`)."""
    longest = run = 0
    with open(p, "rb") as f:
        while block := f.read(chunk):
            parts = block.split(b"\n")
            if len(parts) == 1:
                run += len(block)
            else:
                longest = max(longest, run + len(parts[0]), max(map(len, parts[1:-1]), default=0))
                run = len(parts[-1])
            longest = max(longest, run)
    return longest


def _check_json(p: Path, key: str) -> None:
    """A `.json` data file is one JSON document or JSON lines (what the loader accepts)."""
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)
        return
    except json.JSONDecodeError as whole:
        try:
            for line in text.splitlines():
                if line.strip():
                    json.loads(line)
            return
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: {p} is not valid JSON (line {whole.lineno}, column {whole.colno}: "
                              f"{whole.msg}); fix it, or give a .txt file of stories") from None


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
    if is_user_source(data.source):  # importable now, not after minutes of setup
        from backbone_lab.data.errors import DataError

        try:
            user_source(data.source)
        except DataError as err:
            raise ConfigError(str(err)) from None
    if data.source == "local":
        for key in ("train_files", "val_files"):
            for i, f in enumerate(data.options[key]):
                check_text_file(f, f"data.options.{key}[{i}]")
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


# ----------------------------------------------------------------------------- the run's own settings
def known_top_level_keys() -> set[str]:
    """Keys a composed config may hold at its top level: those of conf/config.yaml and its groups."""
    import yaml

    doc = yaml.safe_load(CONFIG_FILE.read_text()) or {}
    groups = {next(iter(d)).removeprefix("optional ").strip() for d in doc.get("defaults", []) if isinstance(d, dict)}
    return (set(doc) - {"defaults"}) | groups | {"hydra", "experiment"}


def check_known_keys(cfg) -> None:
    """An unknown top-level key (`+foo=1`, `+optimzer.lr=...`) is refused like a typo."""
    if not CONFIG_FILE.exists():  # the package without its conf/ folder: nothing to compare with
        return
    known = known_top_level_keys()
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown config key {key!r} (given as +{key}=...); {hint}")


def check_folder_name(key: str, name) -> None:
    """`run_name` / `experiment_name`: one plain folder under the output root."""
    name = str(name if name is not None else "")
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith(".."):
        elsewhere = "run_dir=<path>" if key == "run_name" else "paths.output_root=<folder>"
        raise ConfigError(f"{key}={name!r} must be a plain folder name (no '/', no '..'); "
                          f"use {elsewhere} to write elsewhere")
    if len(name.encode("utf-8")) > NAME_MAX_BYTES:
        raise ConfigError(f"{key} is {len(name.encode('utf-8'))} bytes long; a folder name has at most "
                          f"{NAME_MAX_BYTES}: choose a shorter one")


def check_can_create(key: str, folder: str | os.PathLike) -> None:
    """`folder` exists as a folder or can be created: every component fits a file system and the
    nearest existing ancestor is a folder where a folder can be made (probed, then removed)."""
    target = Path(folder).expanduser()
    for part in target.parts:
        if len(part.encode("utf-8")) > NAME_MAX_BYTES:
            raise ConfigError(f"{key}={folder}: the name {part[:20]}... is longer than {NAME_MAX_BYTES} bytes")
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}={folder}: {probe} is {'a file' if probe.is_file() else _kind(probe)}, not a folder; "
                          "give a folder path")
    if target.exists():
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".backbone_lab_probe_", dir=probe))
    except OSError as err:
        raise ConfigError(f"{key}={folder}: cannot create a folder in {probe} ({err.strerror or err}); "
                          "give a writable location") from None


def _finite_values(node, prefix: str):
    """(dotted key, value) of every non-finite number in a config node."""
    from omegaconf import DictConfig, ListConfig

    items = node.items() if isinstance(node, DictConfig) else enumerate(node) if isinstance(node, ListConfig) else ()
    for k, v in items:
        key = f"{prefix}.{k}" if isinstance(node, DictConfig) else f"{prefix}[{k}]"
        if isinstance(v, (DictConfig, ListConfig)):
            yield from _finite_values(v, key)
        elif isinstance(v, float) and not math.isfinite(v):
            yield key, v


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_init_source(init_from, init_step) -> None:
    """`init_from` names a run folder with a checkpoint; `init_step` an integer step it has."""
    if init_step is not None and (isinstance(init_step, bool) or not isinstance(init_step, int) or init_step < 0):
        raise ConfigError(f"init_step={init_step!r} must be a step number (an integer >= 0), or null for the final step")
    if not init_from:
        if init_step is not None:
            raise ConfigError("init_step is set without init_from: give init_from=<run folder> too")
        return
    src = Path(str(init_from)).expanduser()
    if not src.is_dir():
        siblings = [p.name for p in src.parent.iterdir() if p.is_dir()] if src.parent.is_dir() else []
        close = difflib.get_close_matches(src.name, siblings, n=1)
        hint = f"did you mean {src.parent / close[0]}?" if close else "give a finished run folder"
        raise ConfigError(f"init_from={init_from}: no such folder; {hint}")
    from backbone_lab.init_from import source_checkpoint
    from backbone_lab.run_dir import RunDir

    source_checkpoint(RunDir(src), init_step)  # one line for an empty folder, a missing step, a bad file


def check_sweep_overrides(overrides: list[str]) -> None:
    """What a multirun command line can be checked for before Hydra makes the sweep folder: the
    `experiment_name` / `run_name` it gives (each swept value)."""
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in ("experiment_name", "run_name"):
            for name in value.split(","):
                check_folder_name(key, name)


def check_run_settings(cfg) -> None:
    """The settings of the run itself, in one line each, before any folder is made (see the
    module docstring); `cfg` is the composed config of one run."""
    check_known_keys(cfg)
    seed = cfg.get("seed")
    if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed={seed!r} must be an integer (0 is fine)")
    resume = cfg.get("resume", "never")
    if resume not in ("never", "auto"):
        raise ConfigError(f"resume={resume!r} must be 'never' or 'auto'")
    check_folder_name("experiment_name", cfg.get("experiment_name", "default"))
    if cfg.get("run_dir"):
        check_can_create("run_dir", cfg.run_dir)
    else:
        check_folder_name("run_name", cfg.get("run_name"))
        root = cfg.get("paths", {}).get("output_root") if cfg.get("paths") is not None else None
        if root:
            check_can_create("paths.output_root", root)
    for key, value in _finite_values(cfg.get("optimizer") or {}, "optimizer"):
        raise ConfigError(f"{key}={value} must be a finite number")
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices")
    if str(trainer.get("accelerator", "cpu")) == "cpu" and isinstance(devices, int) and devices > cpu_cores():
        raise ConfigError(f"trainer.devices={devices} CPU ranks on a machine with {cpu_cores()} cores: use at most "
                          f"{cpu_cores()} (each rank needs a core), or a GPU trainer")
    check_init_source(cfg.get("init_from"), cfg.get("init_step"))
