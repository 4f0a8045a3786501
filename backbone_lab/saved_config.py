"""A run's saved `config.yaml` in today's layout: older runs stay readable and keep their identity.

Each entry of `upgrade` is a fact about an older layout, not a copy of today's defaults:

* before data sources had their own options node, their keys sat beside `data.source`
  (`data.n_train_stories`, `data.train_files`, ...) and every source's keys were saved whatever
  the source; the hub source always read `roneneldan/TinyStories` (train / validation);
* before `datamodule` and `module` were config nodes, every run was built from
  `BackboneDataModule` and `BackboneLitModule`.

`run_identity.comparable` upgrades both sides, so the resume check, the sweep fingerprint and
`compare`'s groups see an old run and its re-run today as the same run. Pure dict work: no
schema is imported (tests/test_data_sources.py checks the tables against the sources' `Options`).
"""

from __future__ import annotations

import copy
from pathlib import Path

LEGACY_DATA_KEYS = {
    "synthetic": {"n_train_stories": 8000, "n_val_stories": 400, "synthetic_seed": 1234},
    "local": {"train_files": [], "val_files": [], "val_fraction": 0.05, "text_field": "text"},
    "tinystories": {},
}
"""Built-in source -> its keys as an old `data` node held them (with their defaults then)."""

LEGACY_IMPLIED_OPTIONS = {
    "tinystories": {"dataset": "roneneldan/TinyStories", "train_split": "train", "val_split": "validation"},
}
"""Options an old run used without naming them (no key existed)."""

LEGACY_COMPONENTS = {
    "datamodule": {"_target_": "backbone_lab.data.datamodule.BackboneDataModule", "_partial_": True},
    "module": {"_target_": "backbone_lab.lit_module.BackboneLitModule", "_partial_": True},
}
"""The component nodes every run had before they were config nodes."""


def upgrade(cfg: dict) -> dict:
    """A plain run config (resolved or not) in today's layout; a current one comes back equal.
    The argument is not modified."""
    if not isinstance(cfg, dict):
        return cfg
    out = dict(cfg)
    data = out.get("data")
    if isinstance(data, dict) and any(key in data for keys in LEGACY_DATA_KEYS.values() for key in keys):
        out["data"] = _upgrade_data(data)
    if isinstance(data, dict):  # a run config (not a lone group node): components default to the old ones
        for name, node in LEGACY_COMPONENTS.items():
            out.setdefault(name, copy.deepcopy(node))
    return out


def _upgrade_data(data: dict) -> dict:
    data = dict(data)
    source = data.get("source", "synthetic")
    options = {**LEGACY_IMPLIED_OPTIONS.get(source, {}), **(data.get("options") or {})}
    for owner, keys in LEGACY_DATA_KEYS.items():
        for key, default in keys.items():
            value = data.pop(key, default)
            if owner == source:
                options[key] = copy.deepcopy(value)
    data["options"] = options
    return data


def load_saved_config(path: str | Path):
    """`OmegaConf.load(path)` in today's layout (a DictConfig, interpolations kept)."""
    from omegaconf import OmegaConf

    loaded = OmegaConf.load(path)
    container = OmegaConf.to_container(loaded, resolve=False)
    upgraded = upgrade(container)
    return loaded if upgraded == container else OmegaConf.create(upgraded)
