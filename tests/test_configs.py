"""Every config in conf/ composes, and bad configs fail at compose time with a clear message."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from backbone_lab.train import typed
from conftest import CONF, compose_config

# `reference` is not a group of the primary config (each diagnostics callback pulls it in)
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment", "reference"))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda x: str(x)
)
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "local":
        overrides.append("data.options.train_files=[stories.txt]")
    cfg = compose_config(overrides)
    if group == "debug":  # a global package: it shrinks other groups instead of adding its own
        assert cfg.model.seq_len == 64 and cfg.train.max_steps <= 100
    else:
        OmegaConf.to_container(cfg[group], resolve=False)
        assert cfg[group] is not None
    typed(cfg)  # every schema's __post_init__ accepts the shipped values


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"+experiment={experiment}"])
    assert cfg.experiment_name != "default", "an experiment must name its output folder"


@pytest.mark.parametrize(
    "override,needle",
    [("model.d_modle=3", "d_modle"), ("train.max_steps=abc", "max_steps"), ("data.p_probe=high", "p_probe"),
     ("analysis.rolling_windw=5", "rolling_windw"), ("trainer.devcies=2", "devcies"),
     ("snapshots.evry=5", "evry"), ("model.preset=medium", "preset")],
)
def test_typos_and_wrong_types_fail_at_compose_time(override, needle):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config([override])
    assert needle in str(info.value) or needle in str(info.value.__cause__)


def test_default_composes_to_the_cpu_default():
    cfg = compose_config()
    assert cfg.model.name == "tiny" and cfg.data.source == "synthetic"
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1  # one CPU process
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert "experiment" not in cfg  # so that +experiment=NAME works


@pytest.mark.parametrize("kind", ["rolling", "global"])
def test_reference_options_compose_inside_the_diagnostics(kind):
    cfg = compose_config(["callbacks=diagnostics", f"reference@callbacks.fisher.reference={kind}"])
    assert cfg.callbacks.fisher.reference.kind == kind and cfg.callbacks.grad_alignment.reference.kind == "rolling"
    with pytest.raises(ConfigCompositionException):
        compose_config(["callbacks=diagnostics", "callbacks.fisher.reference.windw=4"])


def test_hydra_folder_names_exclude_exactly_the_neutral_keys():
    """One list of keys that do not change a run (run_identity.NEUTRAL_KEYS); Hydra's job folder
    names drop the same keys, plus the experiment choice and the spellings of paths.*."""
    from backbone_lab.run_identity import NEUTRAL_KEYS

    hydra_cfg = OmegaConf.load(CONF / "hydra" / "default.yaml")
    excluded = list(hydra_cfg.job.config.override_dirname.exclude_keys)
    assert excluded == list(NEUTRAL_KEYS) + ["experiment", "paths.cache_dir", "paths.output_root"]
