"""What a user does with a finished run besides analysing it: evaluate a checkpoint
(`python -m backbone_lab.evaluate`) and sample text from it (`python -m backbone_lab.sample`),
on a real tiny run trained once for this module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backbone_lab.metrics_csv import read_rows
from backbone_lab.run_dir import RunDir
from conftest import REPO, TINY_OVERRIDES, compose_config
from process_batch import side_by_side


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 30-step run of conf/debug/tiny.yaml (checkpoints at 10, 20, 30 kept)."""
    from backbone_lab.train import train

    tmp = tmp_path_factory.mktemp("run_tools")
    cfg = compose_config(TINY_OVERRIDES + [f"run_dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}",
                                           "train.keep_checkpoints=true"])
    assert train(cfg)["status"] == "done"
    return tmp / "run"


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_reproduces_the_runs_last_evaluation(tiny_run):
    from backbone_lab.evaluate import evaluate_run

    rows = {r["step"]: r for r in read_rows(RunDir(tiny_run).eval_metrics)}
    got = evaluate_run(tiny_run)
    last = rows[30]
    assert got["step"] == 30
    for key in ("val_loss", "p_in", "p_ood", "nll_in", "nll_ood"):
        assert got[key] == pytest.approx(last[key], rel=1e-6, abs=1e-9), key
    mid = evaluate_run(tiny_run, ckpt=10)  # an earlier kept checkpoint: that step's row
    assert mid["step"] == 10 and mid["val_loss"] == pytest.approx(rows[10]["val_loss"], rel=1e-6)
    assert mid["val_loss"] != pytest.approx(got["val_loss"], rel=1e-6)


@pytest.mark.slow
def test_evaluate_cli_prints_json_and_refuses_bad_folders_in_one_line(tiny_run, tmp_path):
    refusals = (([str(tmp_path)], "is not a run folder"), ([str(tmp_path / "nope")], "no such folder"),
                ([str(tiny_run), "ckpt=999"], "no checkpoint step000999.ckpt"),
                ([str(tiny_run), "ckp=5"], "unknown evaluate option 'ckp'"))
    out, *bads = side_by_side(_cli, ("backbone_lab.evaluate", str(tiny_run), "json=true"),
                              *(("backbone_lab.evaluate", *args) for args, _ in refusals))
    assert out.returncode == 0, out.stderr
    numbers = json.loads(out.stdout.strip().splitlines()[-1])
    assert numbers["val_loss"] == pytest.approx(read_rows(RunDir(tiny_run).eval_metrics)[-1]["val_loss"], rel=1e-6)
    for (args, words), bad in zip(refusals, bads):
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_a_planted_checkpoint_is_refused_not_executed(tiny_run, tmp_path):
    import shutil

    from backbone_lab.errors import RunDirError
    from backbone_lab.run_model import load_run

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("trajectory", "analysis"))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import torch

    torch.save({"state_dict": {}, "x": Payload()}, run / "checkpoints" / "last.ckpt")
    with pytest.raises(RunDirError, match="does not load as a checkpoint"):
        load_run(run)
    assert not marker.exists()


# ----------------------------------------------------------------------------- sample
def test_sampling_is_deterministic_for_a_seed_and_decodes_text(tiny_run):
    from backbone_lab.sample import SampleOptions, sample_run

    opts = SampleOptions(prompt="Once upon a time", max_new_tokens=20, seed=5, num_samples=2, stop_at_eos=False)
    a, b = sample_run(tiny_run, opts), sample_run(tiny_run, opts)
    assert a == b and len(a) == 2
    assert all(isinstance(t, str) and t.startswith("Once upon a time") and len(t) > len("Once upon a time") for t in a)
    assert a[0] != a[1]  # two draws of one generator differ
    other = sample_run(tiny_run, SampleOptions(prompt="Once upon a time", max_new_tokens=20, seed=6, stop_at_eos=False))
    assert other[0] != a[0]
    greedy = [sample_run(tiny_run, SampleOptions(max_new_tokens=10, temperature=0, seed=s, stop_at_eos=False))[0]
              for s in (1, 2)]
    assert greedy[0] == greedy[1]  # temperature 0: argmax, the seed does not matter


def test_generate_respects_top_k_and_the_context_length():
    import torch

    from backbone_lab.model import GPT, ModelConfig
    from backbone_lab.sample import generate

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, seq_len=8, vocab_size=11)).eval()
    ids = torch.zeros(1, 3, dtype=torch.long)
    out = generate(model, ids, max_new_tokens=12, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 15)  # longer than seq_len: the context is cropped, not an error
    # top_k=1 is greedy: every new token is the argmax of the logits of its (cropped) context
    for t in range(3, 15):
        ctx = out[:, max(0, t - 8):t]
        assert int(out[0, t]) == int(model(ctx)[0, -1].argmax())


@pytest.mark.slow
def test_sample_cli_prints_the_continuation(tiny_run):
    same = ("backbone_lab.sample", str(tiny_run), "prompt=Once upon a time", "max_new_tokens=15", "seed=2")
    out, again, bad = side_by_side(_cli, same, same, ("backbone_lab.sample", str(tiny_run), "temperature=-1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Once upon a time")
    assert again.stdout == out.stdout
    assert bad.returncode == 2 and bad.stderr.startswith("error: temperature must be >= 0")
