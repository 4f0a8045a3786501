"""The run's data module and Lightning module, built from their `_target_` nodes.

`conf/datamodule/` and `conf/module/` hold one `_target_` node each (as `trainer`, `callbacks`,
`logger` and `optimizer` do; lightning-hydra-template's `instantiate(cfg.data)` /
`instantiate(cfg.model)`). They are `_partial_` nodes, like the optimizer's: `instantiate` gives
the class with the node's own keys bound, and `train.py` calls it with the run's typed configs
(Hydra would turn a dataclass passed through `instantiate` into a config node). A data module
or a Lightning module of your own is a class taking those arguments — plus any keys of its own
in its node — and a YAML naming it; `train.py` does not change.

| node         | built with                                                     | default                 |
|--------------|----------------------------------------------------------------|-------------------------|
| `datamodule` | `config` (DataConfig), `seq_len`, `seed`                        | BackboneDataModule      |
| `module`     | `model` (ModelConfig), `optimizer` (a partial factory), `schedule`, `objective`, `loop` | BackboneLitModule |

What the rest of the run asks of them: the data module's `setup`, `vocab_size`,
`save_run_files(run_dir)`, `set_start_step(step, accumulate)`, `train_dataloader`, and for the
evaluation callback `val_loader()` / `probe_eval_loader(kind)`; the module's `model` (a `GPT`:
snapshots, diagnostics and `init_from` read its parameters) and Lightning's hooks. A subclass of
`BackboneDataModule` / `BackboneLitModule` has all of them
(`tests/test_extensions.py::test_a_lightning_module_is_one_class_and_one_yaml`).

`check_component` runs among the early checks (before any data preparation): the class imports
and its signature accepts the node's keys plus the arguments `train.py` passes.
"""

from __future__ import annotations

import inspect

from backbone_lab.errors import ConfigError

DATAMODULE_ARGUMENTS = ("config", "seq_len", "seed")
MODULE_ARGUMENTS = ("model", "optimizer", "schedule", "objective", "loop")


def _target(node, name: str):
    """The class a node's `_target_` (package.module.Class) names."""
    import importlib

    path = str(node.get("_target_") or "") if node is not None else ""
    module, _, attr = path.rpartition(".")
    if not module:
        raise ConfigError(f"{name}._target_={path!r}: name a class as package.module.Class (conf/{name}/)")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{name}._target_={path}: cannot import it ({type(err).__name__}: {err})") from None


def check_component(node, name: str, arguments: tuple[str, ...]) -> None:
    """The node's class imports, is partial, and takes its keys plus `arguments` (one-line ConfigError)."""
    cls = _target(node, name)
    if not node.get("_partial_", False):
        raise ConfigError(f"{name} needs _partial_: true (train.py calls the class with the run's typed configs)")
    own = [k for k in node if not str(k).startswith("_")]
    try:
        inspect.signature(cls).bind(**dict.fromkeys([*own, *arguments]))
    except TypeError as err:
        raise ConfigError(f"{name}: {getattr(cls, '__qualname__', cls)} does not take the arguments "
                          f"{sorted({*own, *arguments})} ({err}); see backbone_lab/components.py") from None


def _partial(node, name: str):
    from hydra.utils import instantiate

    if not node.get("_partial_", False):
        raise ConfigError(f"{name} needs _partial_: true (train.py calls the class with the run's typed configs)")
    return instantiate(node)


def build_datamodule(node, config, seq_len: int, seed: int):
    """The `datamodule` node's class with the run's `DataConfig`, the model's context length and the seed."""
    return _partial(node, "datamodule")(config=config, seq_len=seq_len, seed=seed)


def build_module(node, model, optimizer, schedule, objective, loop):
    """The `module` node's class: trains `model` with `objective`, `optimizer`, `schedule` and `loop`."""
    return _partial(node, "module")(model=model, optimizer=optimizer, schedule=schedule, objective=objective,
                                    loop=loop)
