"""A run saved before the data sources had their own options node (and before `datamodule` /
`module` were config nodes) is read in today's layout: same identity as its re-run today
(resume check, sweep fingerprint, compare groups), and its typed configs build.

The assets are the `config.yaml` files the previous layout wrote (composed by the code of that
commit, resolved as `train.prepare_run_dir` writes them) for the overrides in `CASES`."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from backbone_lab.data.sources import BUILT_IN, options_schema
from backbone_lab.run_identity import differences, fingerprint
from backbone_lab.saved_config import LEGACY_COMPONENTS, LEGACY_DATA_KEYS, LEGACY_IMPLIED_OPTIONS, load_saved_config, upgrade
from conftest import compose_config

ASSETS = Path(__file__).parent / "assets" / "config_before_data_options"
CASES = {  # asset -> (the overrides it was composed from, today's spelling)
    "synthetic_tiny": ["debug=tiny", "seed=7"],
    "local": ["debug=tiny", "data=local", "data.options.train_files=[stories.txt]", "data.options.val_fraction=0.1"],
    "tinystories": ["data=tinystories"],
}


def _today(name: str):
    return compose_config(CASES[name] + ["run_dir=/runs/x", "paths.cache_dir=/cache"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_old_run_is_the_same_run_as_its_rerun_today(name):
    old = OmegaConf.load(ASSETS / f"{name}.yaml")
    assert "n_train_stories" in old.data and "module" not in old  # really the old layout (options: {} then)
    today = _today(name)
    assert differences(old, today) == []
    assert fingerprint(old) == fingerprint(today)  # a re-run sweep skips the finished job
    # a real change is still seen through the upgrade
    key, value = {"synthetic_tiny": ("n_train_stories", 401), "local": ("val_fraction", 0.2),
                  "tinystories": ("train_split", "train[:10]")}[name]
    changed = _today(name)
    changed.data.options[key] = value
    assert [k for k, _, _ in differences(old, changed)] == [f"data.options.{key}"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_old_config_builds_its_typed_configs(name):
    from backbone_lab.train import typed

    conf = typed(load_saved_config(ASSETS / f"{name}.yaml"))
    expected = {"synthetic_tiny": {"n_train_stories": 400, "n_val_stories": 40, "synthetic_seed": 1234},
                "local": {"train_files": ["stories.txt"], "val_files": [], "val_fraction": 0.1, "text_field": "text"},
                "tinystories": {"dataset": "roneneldan/TinyStories", "train_split": "train", "val_split": "validation"}}
    assert conf["data"].options == expected[name]


def test_a_current_config_is_left_as_it_is():
    today = OmegaConf.to_container(_today("local"), resolve=True)
    assert upgrade(today) == today
    assert upgrade({"seed": 1}) == {"seed": 1}  # not a run config: nothing added


def test_the_legacy_tables_name_real_options():
    """Every key the old layout held for a source is an option of that source today, and the
    component nodes name classes that exist."""
    assert set(LEGACY_DATA_KEYS) == set(BUILT_IN)
    for source, keys in LEGACY_DATA_KEYS.items():
        today = {f.name for f in fields(options_schema(source))}
        assert set(keys) | set(LEGACY_IMPLIED_OPTIONS.get(source, {})) <= today, source
    from backbone_lab.components import _target

    for name, node in LEGACY_COMPONENTS.items():
        assert _target(node, name) is not None and node["_partial_"] is True
        assert OmegaConf.to_container(compose_config([])[name]) == node  # today's default is the old class


def test_compare_reads_an_old_run_in_todays_layout(tmp_path):
    from backbone_lab.compare.runs import load_run

    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text((ASSETS / "synthetic_tiny.yaml").read_text())
    config = load_run(run).config
    assert config["data"]["options"]["n_train_stories"] == 400 and "n_train_stories" not in config["data"]
    assert config["module"]["_target_"] == "backbone_lab.lit_module.BackboneLitModule"
