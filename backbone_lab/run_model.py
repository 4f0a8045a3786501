"""A trained run back from its folder: its config, its tokenizer and the model of one checkpoint.

What `python -m backbone_lab.evaluate` and `python -m backbone_lab.sample` (and a notebook) start
from. The checkpoint is read as data only (`weights_only=True`, `checkpoint_io.load_checkpoint_file`);
`ckpt` names it: `last` (default, always the final step), a step number (`stepSSSSSS.ckpt`, kept
with `train.keep_checkpoints=true` or every `train.ckpt_every`), or a path. A folder that is not a
run, a missing or unreadable checkpoint end in one line (`RunDirError`) before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backbone_lab.errors import RunDirError
from backbone_lab.run_dir import RunDir


@dataclass
class LoadedRun:
    """One run's model at one checkpoint, ready for inference (`model.eval()`, on `device`)."""

    run: RunDir
    cfg: object  # the run's config.yaml (DictConfig)
    conf: dict  # group -> typed config (`train.typed`)
    tokenizer: object  # data.tokenizer.TextTokenizer of the run (its tokenizer.json)
    model: object  # model.GPT
    checkpoint: Path
    step: int


def check_run_folder(run_dir: str | Path) -> RunDir:
    """The run folder, or one line saying why `run_dir` is not one."""
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise RunDirError(f"{run.root}: no such folder (pass a run folder, e.g. multirun_outputs/runs/<run>)")
    if not run.config.exists():
        raise RunDirError(f"{run.root} is not a run folder: it has no config.yaml")
    if not run.tokenizer.exists():
        raise RunDirError(f"{run.root}: no tokenizer.json (the run stopped before its data was prepared)")
    return run


def resolve_checkpoint(run: RunDir, ckpt: str | int | None = None) -> Path:
    """`last` / None -> checkpoints/last.ckpt; a step number -> checkpoints/stepSSSSSS.ckpt; else a path
    (absolute, relative to the working directory, or a file name inside checkpoints/)."""
    text = "last" if ckpt is None else str(ckpt).strip()
    if text == "last":
        path = run.last_checkpoint
    elif text.isdigit():
        path = run.step_checkpoint(int(text))
    else:
        path = Path(text) if Path(text).exists() else run.checkpoints / text
    if not path.is_file():
        have = sorted(p.name for p in run.checkpoints.glob("*.ckpt")) if run.checkpoints.is_dir() else []
        raise RunDirError(f"{run.root}: no checkpoint {path.name if path.parent == run.checkpoints else path} "
                          f"(available: {', '.join(have) or 'none'}); pass ckpt=last, ckpt=<step> or ckpt=<path>")
    return path


def load_run(run_dir: str | Path, ckpt: str | int | None = None, device: str = "cpu") -> LoadedRun:
    """The run's config, tokenizer and model with the weights of `ckpt` (see module docstring)."""
    from tokenizers import Tokenizer

    from backbone_lab.checkpoint_io import load_checkpoint_file
    from backbone_lab.data.tokenizer import TextTokenizer
    from backbone_lab.model import GPT
    from backbone_lab.saved_config import load_saved_config
    from backbone_lab.train import typed

    run = check_run_folder(run_dir)
    path = resolve_checkpoint(run, ckpt)
    cfg = load_saved_config(run.config)
    conf = typed(cfg)
    tokenizer = TextTokenizer(Tokenizer.from_file(str(run.tokenizer)), name=f"{run.root.name}/tokenizer.json")
    try:
        content = load_checkpoint_file(path)
        state = {k.removeprefix("model."): v for k, v in content["state_dict"].items() if k.startswith("model.")}
    except Exception as err:  # noqa: BLE001 - a damaged or planted file is refused, never executed
        raise RunDirError(f"{path} does not load as a checkpoint ({type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0][:160]})") from None
    model = GPT(conf["model"].with_vocab(tokenizer.vocab_size))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and model.cfg.tie_embeddings)]
    if missing or unexpected:
        raise RunDirError(f"{path}: weights do not fit the run's model config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    model.to(device).eval()
    return LoadedRun(run, cfg, conf, tokenizer, model, path, int(content.get("global_step", 0)))


def parse_options(defaults, overrides: list[str], what: str):
    """`defaults` (a dataclass instance) updated from `key=value` strings; one-line ValueError for an
    unknown key or a bad value."""
    import dataclasses

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"argument {bad[0]!r} is not key=value")
    names = [f.name for f in dataclasses.fields(defaults)]
    for o in overrides:
        key = o.split("=", 1)[0]
        if key not in names:
            raise ValueError(f"unknown {what} option {key!r}; valid: {', '.join(names)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(defaults), OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ValueError(f"bad option: {str(err).strip().splitlines()[0]}") from None


def run_cli(argv, usage: str, defaults, what: str, action) -> int:
    """The shell shared by ``evaluate`` and ``sample``: help, ``key=value`` options on top of
    `defaults`, the run folder check, then ``action(run_dir, options)`` (which prints its result);
    bad input is one ``error:`` line and exit status 2."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    from backbone_lab.errors import user_facing_errors

    try:
        opts = parse_options(defaults, argv[1:], what)
        check_run_folder(argv[0])
        action(argv[0], opts)
    except (ValueError, *user_facing_errors()) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
