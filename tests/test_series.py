"""Checkpoint series as trajectories (backbone_lab.series): a tiny GPT-NeoX trained with plain torch,
saved with save_pretrained in Pythia's step<N>/ layout, analyses to the numbers of the same weights
written through TrajectoryWriter (1e-12); the other sources (torch .bin, Lightning .ckpt, sharded
safetensors, list files, the hub cache); and one-line errors for bad series before any Gram work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from backbone_lab.analysis.cli import main as analyze_main  # noqa: E402
from backbone_lab.analysis.config import AnalysisConfig  # noqa: E402
from backbone_lab.analysis.run_analysis import run_analysis  # noqa: E402
from backbone_lab.series.cli import SeriesOptions, analyse_series  # noqa: E402
from backbone_lab.series.reader import SeriesReader  # noqa: E402
from backbone_lab.series.sources import discover, step_of_name  # noqa: E402
from backbone_lab.series.trunk_rules import parse_trunk_rule  # noqa: E402
from backbone_lab.trajectory.store import TrajectoryWriter  # noqa: E402

NEOX_TRUNK = ("attention.query_key_value.weight", "attention.dense.weight", "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight")
STEPS = [0, 1, 2, 3, 4, 5, 6, 8, 10, 12]


@pytest.fixture(scope="module")
def neox_series(tmp_path_factory):
    """A tiny GPT-NeoX trained 12 AdamW steps with plain torch; save_pretrained at STEPS into
    step<N>/ folders, and the same trunk weights through TrajectoryWriter."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    root = tmp_path_factory.mktemp("neox")
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=32)
    model = GPTNeoXForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    writer = TrajectoryWriter(root / "run" / "trajectory")
    gen = torch.Generator().manual_seed(1)
    for step in range(max(STEPS) + 1):
        if step:
            x = torch.randint(0, 64, (4, 16), generator=gen)
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
        if step in STEPS:
            model.save_pretrained(root / "series" / f"step{step}")
            writer.append(step, {n: p for n, p in model.named_parameters() if n.endswith(NEOX_TRUNK)})
    return root


def _cfg(out, **kw):
    return AnalysisConfig(out_dir=str(out), figures=False, progress=False, rolling_window=4, **kw)


def _assert_same_numbers(a, b, path=""):
    if isinstance(a, dict):
        for k in a:
            if k in ("elapsed_seconds", "gram_stream_seconds", "out_dir", "run_dir", "trajectory", "config", "stream_seconds"):
                continue
            _assert_same_numbers(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and a and not isinstance(a[0], str):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_numbers(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-12), path


def test_pythia_layout_series_analyses_like_the_trajectory_of_the_same_weights(neox_series, capsys):
    series = neox_series / "series"
    assert [c.step for c in discover(series)] == STEPS
    rc = analyze_main([str(series), "trunk=gpt_neox", f"out={neox_series / 'a_series'}", "figures=false", "rolling_window=4"])
    assert rc == 0, capsys.readouterr().err
    s_series = json.loads((neox_series / "a_series" / "summary.json").read_text())
    s_run = run_analysis(neox_series / "run", _cfg(neox_series / "a_run"))
    assert s_series["dim"] == s_run["dim"] == 3 * (3 * 32 * 32 + 32 * 32 + 2 * 32 * 64)  # 3 blocks: qkv, dense, h_to_4h, 4h_to_h
    g_series = np.load(neox_series / "a_series" / "grams.npz")
    g_run = np.load(neox_series / "a_run" / "grams.npz")
    np.testing.assert_allclose(g_series["G_trunk"], g_run["G_trunk"], rtol=1e-12, atol=1e-12 * g_run["G_trunk"].max())
    assert s_series["pca"]["rownorm"]["pc1_pct"] == pytest.approx(s_run["pca"]["rownorm"]["pc1_pct"], rel=1e-12)
    _assert_same_numbers(s_run, s_series)
    # the manifest-like record: foreign names and blocks
    meta = s_series["trajectory"]["meta"]["series"]
    assert meta["trunk_rule"] == "gpt_neox" and meta["architecture"] == "GPTNeoXForCausalLM"
    assert (neox_series / "a_series" / "report.md").exists()
    manifest = json.loads((neox_series / "a_series" / "series_manifest.json").read_text())
    assert manifest["blocks"] == [0, 1, 2] and manifest["dim"] == s_series["dim"]
    assert {(t["name"], t["block"]) for t in manifest["tensors"]} == {
        (f"gpt_neox.layers.{b}.{n}", b) for b in range(3) for n in NEOX_TRUNK}
    # the sketch of the same series gives the same numbers within the tested tolerance (k = 4096 per block)
    from backbone_lab.series.sketch import RECOMMENDED_K

    sk = analyse_series(str(series), SeriesOptions(trunk="gpt_neox", sketch_dim=RECOMMENDED_K), _cfg(neox_series / "a_sketch"))
    assert abs(sk["pca"]["rownorm"]["pc1_pct"] - s_series["pca"]["rownorm"]["pc1_pct"]) <= 1.0
    assert abs(sk["pca"]["raw"]["pc1_pct"] - s_series["pca"]["raw"]["pc1_pct"]) <= 1.0
    for rows in ("raw", "rownorm"):  # k95 is a step function: equal unless the dense cumulative variance sits at 95 % ± 1 point
        cum = 100 * np.cumsum(s_series["pca"][rows]["explained"])  # explained: fractions per component
        if np.all(np.abs(cum - 95.0) > 1.0):
            assert sk["pca"][rows]["k95"] == s_series["pca"][rows]["k95"], rows
        else:
            assert abs(sk["pca"][rows]["k95"] - s_series["pca"][rows]["k95"]) <= 1, rows
    assert abs(sk["rolling"]["rho_mean"] - s_series["rolling"]["rho_mean"]) <= 0.02
    # compare reads the analysed series like a run (default out: <series>/analysis)
    from backbone_lab.compare.runs import discover_runs

    shutil.copytree(neox_series / "a_series", series / "analysis")
    runs = discover_runs([series])
    assert len(runs) == 1 and runs[0].summary.pc1_rownorm_pct == pytest.approx(s_series["pca"]["rownorm"]["pc1_pct"])
    shutil.rmtree(series / "analysis")


def test_trunk_presets_select_matrices_of_blocks():
    rule = parse_trunk_rule("gpt_neox")
    assert rule.match("gpt_neox.layers.11.attention.query_key_value.weight") == (True, 11)
    assert rule.match("gpt_neox.layers.11.attention.query_key_value.bias") == (False, None)
    assert rule.match("gpt_neox.embed_in.weight")[0] is False
    assert rule.match("gpt_neox.layers.0.input_layernorm.weight")[0] is False
    llama = parse_trunk_rule("llama")
    assert llama.match("model.layers.3.mlp.gate_proj.weight") == (True, 3)
    assert llama.match("model.layers.3.post_attention_layernorm.weight")[0] is False
    gpt2 = parse_trunk_rule("gpt2")
    assert gpt2.match("transformer.h.2.attn.c_attn.weight") == (True, 2)
    assert gpt2.match("transformer.h.2.attn.bias")[0] is False  # the causal-mask buffer of old checkpoints
    ours = parse_trunk_rule("ours")
    assert ours.match("model.blocks.4.mlp.w_down.weight") == (True, 4)  # Lightning prefix
    glob = parse_trunk_rule("blocks.*.attn.*")
    assert glob.match("blocks.7.attn.qkv.weight") == (True, 7)
    assert glob.match("blocks.7.mlp.w_up.weight")[0] is False
    rx = parse_trunk_rule(r"re:enc\.(?P<block>\d+)\.w")
    assert rx.match("enc.5.w") == (True, 5)
    assert step_of_name("step143000") == 143000 and step_of_name("checkpoint-200") == 200
    assert step_of_name("epoch=0-step=1500.ckpt") == 1500 and step_of_name("config") is None


def _copy_series(src: Path, dst: Path, steps=STEPS[:5]) -> Path:
    for s in steps:
        shutil.copytree(src / f"step{s}", dst / f"step{s}")
    return dst


def test_torch_bin_lightning_ckpt_sharded_and_list_sources_give_the_same_gram(neox_series, tmp_path):
    ref = SeriesReader(_copy_series(neox_series / "series", tmp_path / "st"), trunk="gpt_neox")
    want = {s: ref.load(s) for s in ref.steps}
    ref.close()
    # pytorch_model.bin folders (weights_only torch files)
    for s in STEPS[:5]:
        d = tmp_path / "bin" / f"step{s}"
        d.mkdir(parents=True)
        shutil.copy(neox_series / "series" / f"step{s}" / "config.json", d)
        sd = dict(safetensors_numpy.load_file(str(neox_series / "series" / f"step{s}" / "model.safetensors")))
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, d / "pytorch_model.bin")
        # sharded safetensors with an index
        sh = tmp_path / "sharded" / f"step{s}"
        sh.mkdir(parents=True)
        keys = sorted(sd)
        parts = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for fname, ks in parts.items():
            safetensors_numpy.save_file({k: sd[k] for k in ks}, str(sh / fname))
        (sh / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: f for f, ks in parts.items() for k in ks}}))
        # Lightning checkpoint of our own GPT naming, bf16-free float32
        ours = {k.replace("gpt_neox.layers.", "model.blocks.").replace("attention.query_key_value", "attn.qkv"): torch.from_numpy(v)
                for k, v in sd.items()}
        torch.save({"state_dict": ours, "global_step": s}, tmp_path / f"epoch=0-step={s}.ckpt")
    (tmp_path / "ckpts").mkdir()
    for s in STEPS[:5]:
        shutil.move(tmp_path / f"epoch=0-step={s}.ckpt", tmp_path / "ckpts")
    lst = tmp_path / "series.csv"
    lst.write_text("step,path\n" + "".join(f"{s},sharded/step{s}\n" for s in STEPS[:5]))
    for source, trunk in ((tmp_path / "bin", "gpt_neox"), (lst, "gpt_neox")):
        r = SeriesReader(source, trunk=trunk)
        for s in r.steps:
            np.testing.assert_array_equal(r.load(s), want[s])
        r.close()
    r = SeriesReader(tmp_path / "ckpts", trunk="*blocks.*.attn.qkv.weight")  # a user glob on a Lightning .ckpt
    assert r.blocks == [0, 1, 2] and all(n.startswith("model.blocks.") and "qkv" in n for n in r.names)
    qkv = ref.columns(r"gpt_neox\.layers\.\d+\.attention\.query_key_value\.weight")
    np.testing.assert_array_equal(r.load(STEPS[2]), np.concatenate([want[STEPS[2]][c] for c in qkv]))
    r.close()
    yml = tmp_path / "series.yaml"
    yml.write_text("".join(f"- {{step: {s}, path: bin/step{s}}}\n" for s in STEPS[:5]))
    assert [c.step for c in discover(yml)] == STEPS[:5]


def test_hub_cache_layout_and_offline_error(neox_series, tmp_path):
    from backbone_lab.series.hub import fetch_revisions
    from backbone_lab.series.sources import SeriesError

    repo = tmp_path / "cache" / "models--EleutherAI--pythia-tiny"
    (repo / "refs").mkdir(parents=True)
    for i, s in enumerate(STEPS[:4]):
        commit = f"{i:040x}"
        shutil.copytree(neox_series / "series" / f"step{s}", repo / "snapshots" / commit)
        (repo / "refs" / f"step{s}").write_text(commit)
    cks = fetch_revisions("EleutherAI/pythia-tiny", [f"step{s}" for s in STEPS[:4]], cache_dir=str(tmp_path / "cache"), local_files_only=True)
    assert [c.step for c in cks] == STEPS[:4] and cks[2].path == repo / "snapshots" / f"{2:040x}"
    s = analyse_series(str(repo), SeriesOptions(trunk="gpt_neox"), _cfg(tmp_path / "out"))  # the cache folder is a series
    assert s["trajectory"]["n_stored"] == 4 and s["trajectory"]["meta"]["series"]["checkpoints"][1]["label"].startswith("revision step1")
    # one command from the hub: hub:ORG/NAME revisions=… (here from the cache, offline)
    revs = ",".join(f"step{s}" for s in reversed(STEPS[:4]))
    rc = analyze_main(["hub:EleutherAI/pythia-tiny", f"revisions={revs}", f"cache_dir={tmp_path / 'cache'}", "offline=true",
                       "trunk=gpt_neox", f"out={tmp_path / 'hub_out'}", "figures=false"])
    assert rc == 0
    assert json.loads((tmp_path / "hub_out" / "summary.json").read_text())["steps"] == json.loads(
        (tmp_path / "out" / "summary.json").read_text())["steps"]
    with pytest.raises(SeriesError, match=r"EleutherAI/pythia-tiny@step99: not in the cache and the hub cannot be reached"):
        fetch_revisions("EleutherAI/pythia-tiny", ["step99"], cache_dir=str(tmp_path / "cache"), local_files_only=True)


def test_half_precision_safetensors_are_read_exactly(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    for dt in (torch.float16, torch.bfloat16):
        root = tmp_path / str(dt).split(".")[1]
        want = {}
        for s in (0, 10, 20):
            sd = {f"model.layers.{b}.mlp.up_proj.weight": torch.randn(6, 5, generator=g).to(dt) for b in range(2)}
            (root / f"step{s}").mkdir(parents=True)
            save_file(sd, str(root / f"step{s}" / "model.safetensors"))
            want[s] = torch.cat([sd[f"model.layers.{b}.mlp.up_proj.weight"].float().reshape(-1) for b in range(2)]).numpy()
        r = SeriesReader(root, trunk="llama")
        assert r.meta["series"]["source_dtypes"] == ["BF16" if dt == torch.bfloat16 else "F16"]
        for s in (0, 10, 20):
            np.testing.assert_array_equal(r.load(s), want[s])
        r.close()


def _bad(tmp_path, capsys, argv, match):
    out = tmp_path / "out"
    rc = analyze_main([*map(str, argv), f"out={out}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert match in err, err
    assert not out.exists()  # stopped before any Gram work
    return err


def test_bad_series_fail_with_one_line_naming_the_checkpoint(neox_series, tmp_path, capsys):
    src = neox_series / "series"
    # missing revision (a list entry whose folder is not there) and an empty revision folder
    lst = tmp_path / "l.csv"
    lst.write_text("".join(f"{s},{src}/step{s}\n" for s in STEPS[:3]) + f"50,{src}/step50\n")
    _bad(tmp_path, capsys, [lst, "trunk=gpt_neox"], "step50 does not exist; download the missing revision")
    d = _copy_series(src, tmp_path / "empty")
    (d / "step99").mkdir()
    _bad(tmp_path, capsys, [d, "trunk=gpt_neox"], "step99: ")
    # unsorted and duplicate steps
    lst.write_text("".join(f"{s},{src}/step{s}\n" for s in (0, 2, 1)))
    _bad(tmp_path, capsys, [lst, "trunk=gpt_neox"], "step 1 (l.csv line 3")
    lst.write_text("".join(f"{s},{src}/step{s}\n" for s in (0, 1, 1)))
    _bad(tmp_path, capsys, [lst, "trunk=gpt_neox"], "step 1 appears twice")
    # shape change between checkpoints
    d = _copy_series(src, tmp_path / "shape")
    sd = dict(safetensors_numpy.load_file(str(d / "step3" / "model.safetensors")))
    sd["gpt_neox.layers.1.attention.dense.weight"] = sd["gpt_neox.layers.1.attention.dense.weight"][:16]
    safetensors_numpy.save_file(sd, str(d / "step3" / "model.safetensors"))
    _bad(tmp_path, capsys, [d, "trunk=gpt_neox"], "step3: tensor gpt_neox.layers.1.attention.dense.weight has shape [16, 32] but [32, 32]")
    # a checkpoint without a trunk tensor
    del sd["gpt_neox.layers.1.attention.dense.weight"]
    safetensors_numpy.save_file(sd, str(d / "step3" / "model.safetensors"))
    _bad(tmp_path, capsys, [d, "trunk=gpt_neox"], "step3: lacks trunk tensor gpt_neox.layers.1.attention.dense.weight")
    # mixed architectures
    d = _copy_series(src, tmp_path / "mixed")
    c = json.loads((d / "step4" / "config.json").read_text())
    c["architectures"] = ["LlamaForCausalLM"]
    (d / "step4" / "config.json").write_text(json.dumps(c))
    _bad(tmp_path, capsys, [d, "trunk=gpt_neox"], "step4: architecture LlamaForCausalLM but step0 is GPTNeoXForCausalLM")
    # a truncated weights file is caught from its header, before any Gram work
    d = _copy_series(src, tmp_path / "trunc")
    f = d / "step2" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    _bad(tmp_path, capsys, [d, "trunk=gpt_neox"], "step2: model.safetensors is not a valid safetensors file")
    # a hub revision that is neither in the cache nor reachable
    _bad(tmp_path, capsys, ["hub:EleutherAI/pythia-none", "revisions=step0,step1,step2", f"cache_dir={tmp_path / 'c'}", "offline=true"],
         "EleutherAI/pythia-none@step0: not in the cache")
    # the wrong preset
    _bad(tmp_path, capsys, [src, "trunk=llama"], "no tensor matches trunk=llama")
