"""Every extension point is a one- or two-file addition (README "Extending"): each test writes
the files a user would write into a temp dir — outside the package — and runs them end to end
(train + analysis). (An analysis stage: tests/test_analysis_pipeline.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from pathlib import Path

from backbone_lab.run_markers import read_marker
from backbone_lab.trajectory.store import TrajectoryReader
from conftest import REPO, compose_config

RUN = ["train.max_steps=10", "train.eval_every=5", "snapshots.every=2", "analysis.corr_bootstrap=0",
       "analysis.figures=false"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _train(tmp: Path, *overrides: str) -> Path:
    from backbone_lab.train import train

    cfg = compose_config(["debug=tiny", f"hydra.searchpath=[file://{tmp / 'conf'}]", f"run_dir={tmp / 'run'}",
                          f"paths.cache_dir={tmp / 'cache'}", *RUN, *overrides])
    assert train(cfg)["status"] == "done"
    return tmp / "run"


def test_a_model_family_is_one_yaml(tmp_path):
    """RMSNorm + GELU + rotary positions, untied: a family the package does not ship, chosen by
    component names in one YAML file."""
    _write(tmp_path / "conf" / "model" / "rms_gelu_rope.yaml", """
        defaults: [schema, _self_]
        name: rms_gelu_rope
        n_layer: 3
        d_model: 64
        n_head: 4
        d_ff: 128
        seq_len: 64
        norm: RMSNorm
        mlp: GELU
        positions: rope
        tie_embeddings: false
    """)
    run = _train(tmp_path, "model=rms_gelu_rope")
    reader = TrajectoryReader(run)
    assert reader.blocks == [0, 1, 2] and len(reader.names) == 3 * 4  # the model declared its trunk
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["pca"]["rownorm"]["pc1_pct"] > 0
    assert json.loads((run / "DONE").read_text())["pc1_rownorm_pct"] > 0


def test_a_data_source_is_one_function_and_one_yaml(tmp_path, monkeypatch):
    _write(tmp_path / "my_corpus.py", '''
        """A user's dataset: any function config -> (train texts, val texts)."""
        import random


        def fables(config):
            rng = random.Random(config.options["seed"])
            animals = ["fox", "crow", "hare", "tortoise", "lion", "mouse", "ant", "grasshopper"]
            place = config.options["place"]   # a key only this source knows: data.options
            def story():
                a, b = rng.sample(animals, 2)
                return (f"Once a {a} met a {b} near the {place}. The {a} said hello and the {b} smiled. "
                        f"They shared some bread and walked home together before the sun went down.")
            return [story() for _ in range(300)], [story() for _ in range(40)]
    ''')
    _write(tmp_path / "conf" / "data" / "fables.yaml", """
        defaults: [schema, _self_]   # DataConfig: the probe and tokenizer settings at their defaults
        source: my_corpus:fables
        options: {place: river, seed: 7}   # the source's own keys, read as config.options[...]
        cache_dir: ${paths.cache_dir}
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = _train(tmp_path, "data=fables", "data.options.place=forest")
    from omegaconf import OmegaConf

    assert OmegaConf.load(run / "config.yaml").data.source == "my_corpus:fables"
    assert OmegaConf.load(run / "config.yaml").data.options.place == "forest"
    from backbone_lab.data.config import DataConfig

    with pytest.raises(ValueError, match=r"data.options.place is not an option of data.source=synthetic"):
        DataConfig(source="synthetic", options={"place": "river"})
    assert read_marker(run)[0] == "DONE" and (run / "tokenizer.json").exists()


def test_a_lightning_module_is_one_class_and_one_yaml(tmp_path, monkeypatch):
    """A Lightning module (here: the composite loss with the probe term scaled) and a data module
    of one's own: a class and a YAML each, chosen as module=... / datamodule=...; train.py builds
    them from their nodes with the run's typed configs, their own keys come from the YAML."""
    _write(tmp_path / "my_modules.py", '''
        from backbone_lab.data.datamodule import BackboneDataModule
        from backbone_lab.lit_module import BackboneLitModule


        class ScaledProbe(BackboneLitModule):
            """L_LM + probe_scale * lambda L_probe."""

            def __init__(self, model, optimizer, schedule, objective, loop, probe_scale: float = 1.0):
                super().__init__(model, optimizer, schedule, objective, loop)
                self.probe_scale = probe_scale

            def current_lambda(self, step=None):
                return self.probe_scale * super().current_lambda(step)

            def on_fit_end(self):
                from pathlib import Path

                Path(self.trainer.default_root_dir, "module.txt").write_text(
                    f"{type(self).__name__} {self.current_lambda(5)}")


        class CountingData(BackboneDataModule):
            def __init__(self, config, seq_len, seed, label: str = ""):
                super().__init__(config, seq_len=seq_len, seed=seed)
                self.label = label

            def save_run_files(self, run_dir):
                super().save_run_files(run_dir)
                (run_dir / "datamodule.txt").write_text(f"{type(self).__name__} {self.label}")
    ''')
    _write(tmp_path / "conf" / "module" / "scaled_probe.yaml", """
        _target_: my_modules.ScaledProbe
        _partial_: true
        probe_scale: 0.0
    """)
    _write(tmp_path / "conf" / "datamodule" / "counting.yaml", """
        _target_: my_modules.CountingData
        _partial_: true
        label: hello
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = _train(tmp_path, "module=scaled_probe", "datamodule=counting")
    assert (run / "datamodule.txt").read_text() == "CountingData hello"
    assert (run / "module.txt").read_text() == "ScaledProbe 0.0"  # its own key reached the class
    assert read_marker(run)[0] == "DONE"
    from omegaconf import OmegaConf

    saved = OmegaConf.load(run / "config.yaml")
    assert saved.module._target_ == "my_modules.ScaledProbe" and saved.module.probe_scale == 0.0
    # a key the class does not take stops before any data preparation, in one line
    from backbone_lab.errors import ConfigError
    from backbone_lab.train import check_config

    bad = compose_config(["debug=tiny", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "module=scaled_probe",
                          "+module.probe_scael=1.0", f"run_dir={tmp_path / 'bad'}"])
    with pytest.raises(ConfigError, match=r"module: ScaledProbe does not take .*probe_scael"):
        check_config(bad)
    assert not (tmp_path / "bad").exists()


def test_an_optimizer_is_one_yaml(tmp_path):
    _write(tmp_path / "conf" / "optimizer" / "adagrad.yaml", """
        _target_: torch.optim.Adagrad
        _partial_: true
        lr: 1.0e-2
        weight_decay: 0.0
    """)
    run = _train(tmp_path, "optimizer=adagrad")
    assert read_marker(run)[0] == "DONE"


def test_the_cli_finds_user_files_through_the_search_path(tmp_path):
    """The same additions from the command line: `hydra.searchpath` + PYTHONPATH, nothing else."""
    _write(tmp_path / "conf" / "model" / "wide.yaml", """
        defaults: [tiny, _self_]
        name: wide
        d_model: 96
        n_head: 6
    """)
    env = {"PYTHONPATH": str(tmp_path), "BACKBONE_LAB_OUTPUT": str(tmp_path / "out"),
           "BACKBONE_LAB_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "backbone_lab", "debug=tiny", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                           "model=wide", "run_name=wide", "analyze=false", *RUN[:3]],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert TrajectoryReader(tmp_path / "out" / "runs" / "wide").tensors[0]["shape"] == [288, 96]


def test_a_metric_is_one_stage_file(tmp_path, monkeypatch):
    """A metric declared once, in one stage file outside the package, is computed, in the DONE
    headline, a Summary attribute, a compare runs-table column, a claim metric and a W&B key."""
    import csv

    from backbone_lab.analysis.summary import Summary
    from backbone_lab.compare import compare
    from test_wandb_geometry import offline_run

    _write(tmp_path / "drift_cos_metric.py", '''
        """cos(Δθ(final), v_b): how much of the final drift lies on the backbone."""
        from backbone_lab.analysis.stage import Number, StageResult


        class DriftAlignment:
            name = "drift_alignment"
            requires = ("decomposition",)
            numbers = (Number("drift_cos_final", "cos_final", "cos", "cos(Δθ(final), v_b)", headline=True),)

            def run(self, ctx):
                dec = ctx.need("decomposition")
                return StageResult(summary={"cos_final": float(dec.a[-1] / dec.norm_delta[-1])})
    ''')
    claims = _write(tmp_path / "my_claims.yaml", """
        format: backbone_lab.claims
        version: 1
        claims:
          - id: drift_mostly_on_backbone
            statement: "most of the final drift lies along the backbone"
            metric: drift_cos_final
            expect: {at_least: 0.5}
          - id: drift_all_on_backbone
            statement: "all of the final drift lies along the backbone"
            metric: drift_cos_final
            expect: {at_least: 1.5}
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    run = _train(tmp_path, "analysis.extra_stages=[drift_cos_metric:DriftAlignment]", "logger=wandb", "logger.wandb.mode=offline")

    summary = json.loads((run / "analysis" / "summary.json").read_text())
    dec = summary["decomposition"]
    value = summary["drift_alignment"]["cos_final"]
    assert value == pytest.approx(dec["a_final"] / dec["norm_delta_final"]) and 0 < value <= 1   # computed
    assert Summary.read(run).drift_cos_final == value
    assert json.loads((run / "DONE").read_text())["drift_cos_final"] == value                    # DONE headline
    assert offline_run(run)["summary"]["analysis/drift_cos_final"] == pytest.approx(value)      # W&B

    info = compare([run], tmp_path / "cmp", plots=False, claim_files=[claims], paper_claims=False)
    with open(tmp_path / "cmp" / "runs.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["drift_cos_final"]) == pytest.approx(value)                                 # compare
    verdicts = {c["claim"]: c["verdict"] for c in info["claims"]}                                  # claims
    assert verdicts == {"drift_mostly_on_backbone": "holds", "drift_all_on_backbone": "does not hold"}
