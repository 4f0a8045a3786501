"""Register each concept's one typed config as its Hydra group's schema.

Every config group that describes a concept pulls its dataclass in through its YAML files'
defaults list (`defaults: [schema, _self_]`, Hydra's "structured config schema" pattern), so a
typo or a wrong type (`model.d_modle=3`, `train.max_steps=abc`, `analysis.rolling_windw=5`)
stops at compose time with one line. The *same* dataclass is then the constructor's argument
(`GPT(ModelConfig)`, `BackboneDataModule(DataConfig, ...)`, ...), and its `__post_init__`
checks values and ranges before any data is prepared (`train.typed`).

| group       | schema            | defined in                          |
|-------------|-------------------|-------------------------------------|
| model       | ModelConfig       | backbone_lab/model_config.py        |
| data        | DataConfig        | backbone_lab/data/config.py (`data.options`: the source's `Options`, backbone_lab/data/sources/) |
| train       | LoopConfig        | backbone_lab/loop_config.py         |
| trainer     | TrainerConfig     | backbone_lab/loop_config.py (`_target_`: Lightning's Trainer) |
| schedule    | ScheduleConfig    | backbone_lab/objective_config.py    |
| objective   | ObjectiveConfig   | backbone_lab/objective_config.py    |
| snapshots   | SnapshotConfig    | backbone_lab/trajectory/snapshot_config.py |
| analysis    | AnalysisConfig    | backbone_lab/analysis/config.py     |
| reference   | ReferenceConfig   | backbone_lab/diagnostics/reference_direction.py (inside each diagnostics callback) |

The schema modules import neither torch nor Lightning, so `python -m backbone_lab` rejects a
mistyped option or key before importing them (`tests/test_cli_messages.py`).

Nodes instantiated from a `_target_` (optimizer, loggers, callbacks) stay free-form: the class
they build checks its keys when `train` instantiates them, before any data preparation.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from backbone_lab.typed_config import typed_config


def schemas() -> dict[str, type]:
    """Group name -> schema dataclass."""
    # each from its torch-free module: the CLI composes (and rejects typos) before torch is imported
    from backbone_lab.analysis.config import AnalysisConfig
    from backbone_lab.data.config import DataConfig
    from backbone_lab.loop_config import LoopConfig, TrainerConfig
    from backbone_lab.model_config import ModelConfig
    from backbone_lab.objective_config import ObjectiveConfig, ScheduleConfig
    from backbone_lab.trajectory.snapshot_config import SnapshotConfig

    return {"model": ModelConfig, "data": DataConfig, "train": LoopConfig, "trainer": TrainerConfig,
            "schedule": ScheduleConfig, "objective": ObjectiveConfig, "snapshots": SnapshotConfig,
            "analysis": AnalysisConfig}


def register_configs() -> None:
    """Register the schemas with Hydra (idempotent). `reference` is not a group of the primary
    config: each diagnostics callback pulls `conf/reference/<kind>.yaml` into its own node.
    `data_source/<name>` is a built-in data source's `Options`: `conf/data/<name>.yaml` pulls it
    into `data.options` (`- /data_source@options: <name>`)."""
    from backbone_lab.data.sources import BUILT_IN, options_schema
    from backbone_lab.diagnostics.reference_direction import ReferenceConfig

    cs = ConfigStore.instance()
    for group, node in schemas().items():
        cs.store(group=group, name="schema", node=node)
    cs.store(group="reference", name="schema", node=ReferenceConfig)
    for name in BUILT_IN:
        cs.store(group="data_source", name=name, node=options_schema(name))


def build(group: str, node) -> object:
    """The group's schema dataclass from a node (composed, or a plain dict / a run's saved
    config.yaml node): unknown keys, wrong types and values its `__post_init__` rejects raise a
    one-line `ConfigError` naming the key."""
    return typed_config(schemas()[group], node, group)


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def load_option(group: str, name: str) -> object:
    """A shipped option (`conf/<group>/<name>.yaml`) as its typed config, without Hydra's
    composition (for scripts and benchmarks): `load_option("model", "paper")`."""
    node = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    node.pop("defaults", None)
    return build(group, node)
