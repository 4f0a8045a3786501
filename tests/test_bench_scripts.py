"""The benchmark scripts execute (their dry-run / smallest mode) and their pieces compute what
they claim: the authors'-style baseline is the same function as our model, the MFU arithmetic,
interleaved rounds. No timing is asserted anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from process_batch import start_side_by_side

BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))


def _run(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "WANDB_MODE": "disabled", "BACKBONE_LAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# ----------------------------------------------------------------------------- pieces
def test_authors_style_model_is_the_same_function_as_ours():
    from authors_style import AuthorsGPT, composite_loss_by_indexing

    from backbone_lab.config_schema import load_option
    from backbone_lab.model import GPT
    from backbone_lab.objective import composite_loss

    cfg = load_option("model", "tiny").with_vocab(97)
    ours, theirs = GPT(cfg), AuthorsGPT(cfg)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(k.endswith("attn.bias") for k in missing)  # only the mask buffer is theirs alone
    assert sum(p.numel() for p in theirs.parameters()) == ours.num_parameters()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 97, (3, cfg.seq_len), generator=g)
    y = torch.randint(0, 97, (3, cfg.seq_len), generator=g)
    probe = torch.zeros_like(y, dtype=torch.bool)
    probe[0, -2:] = True
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(composite_loss(a, y, probe, 2.0).loss, composite_loss_by_indexing(b, y, probe, 2.0), atol=1e-5)


def test_mfu_arithmetic_and_peak_detection():
    from mfu import flops_per_token, mfu, peak_tflops

    from backbone_lab.config_schema import load_option

    paper = load_option("model", "paper").with_vocab(50257)
    assert flops_per_token(paper) == 6 * 51_045_888 + 12 * 8 * 256 * 512
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert peak_tflops("NVIDIA H100 PCIe") == 756
    assert peak_tflops("NVIDIA H200") == 989
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert peak_tflops("NVIDIA L40S") == 362 and peak_tflops("NVIDIA L4") == 121
    assert peak_tflops("Some Future GPU") is None and peak_tflops("Some Future GPU", 500) == 500
    assert peak_tflops("NVIDIA H100 80GB HBM3", 700) == 700  # the flag wins
    # 1M tokens/s on the paper model = 318.9 TFLOP/s = 32.2 % of an H100 SXM
    assert mfu(1e6, paper, 989) == pytest.approx(0.3224, abs=1e-4)
    assert mfu(1e6, paper, None) is None


def test_rounds_are_interleaved_and_summarised():
    from rounds import Spread, interleaved

    calls = []
    out = interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 3.0}, rounds=3)
    assert calls == ["a", "b"] * 3 and out == {"a": [1.0] * 3, "b": [3.0] * 3}
    s = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.lo, s.hi, s.n) == (2.5, 1.0, 10.0, 4)


def test_a_failing_variant_ends_with_its_error_and_the_others_go_on():
    from rounds import Failed, failure, interleaved, succeeded

    calls, seen = [], []

    def flaky():
        calls.append("b")
        if len([c for c in calls if c == "b"]) == 2:
            raise MemoryError("out of memory in round 2")
        return 2.0

    out = interleaved({"a": lambda: calls.append("a") or 1.0, "b": flaky, "c": lambda: calls.append("c") or 3.0},
                      rounds=3, progress=lambda r, name, res: seen.append((r, name, type(res).__name__)),
                      record_failures=True)
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "c"]  # b is not called again after it failed
    assert out["a"] == [1.0] * 3 and out["c"] == [3.0] * 3
    assert succeeded(out["b"]) == [2.0] and failure(out["a"]) is None
    fail = failure(out["b"])
    assert isinstance(fail, Failed) and fail.round == 2 and fail.error == "MemoryError: out of memory in round 2"
    assert ("out of memory in round 2" in fail.traceback) and (2, "b", "Failed") in seen
    calls.clear()
    with pytest.raises(MemoryError):  # without record_failures the error propagates, as before
        interleaved({"b": flaky}, rounds=3)


def test_gpu_throughput_keeps_the_figures_of_the_variants_that_ran(tmp_path, monkeypatch):
    """Planted faults: variant b runs out of memory in its first round, d fails in its second;
    a keeps both rounds, d its first, and the JSON on disk is rewritten after every measurement."""
    import bench_gpu_throughput as bench

    real_run, calls = bench.LightningRunner.run, {"b": 0, "d": 0}

    def run(self, warmup, steps):
        key = self.variant.key
        calls[key] += 1
        if key == "b":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if key == "d" and calls[key] == 2:
            raise RuntimeError("backend compiler failed\nsecond line")
        return real_run(self, warmup, steps)

    saved = []
    real_save = bench.atomic_write_json

    def save(path, result, **kw):
        real_save(path, result, **kw)
        saved.append(json.loads(Path(path).read_text()))  # what a crash right now would leave

    monkeypatch.setattr(bench.LightningRunner, "run", run)
    monkeypatch.setattr(bench, "atomic_write_json", save)
    out = tmp_path / "bench.json"
    torch.set_num_threads(1)
    assert bench.main(["--dry-run", "--json", str(out)]) == bench.EXIT_SOME_FAILED
    rows = {v["key"]: v for v in json.loads(out.read_text())["variants"]}
    assert rows["a"]["status"] == "ran" and rows["a"]["tokens_per_s"]["n"] == 2
    assert rows["b"]["status"] == "failed" and rows["b"]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert rows["b"]["failed_in_round"] == 1 and "tokens_per_s" not in rows["b"]
    assert rows["d"]["status"] == "failed" and rows["d"]["error"] == "RuntimeError: backend compiler failed"
    assert rows["d"]["tokens_per_s"]["n"] == 1 and rows["d"]["ratio_vs_a"] > 0  # its first round is kept
    assert calls == {"b": 1, "d": 2}
    # one save before the first measurement, one per measurement (a, b, d; a, d), one at the end
    assert len(saved) == 7 and not saved[0]["complete"] and saved[-1]["complete"]
    after_b = {v["key"]: v["status"] for v in saved[2]["variants"]}
    assert after_b == {"a": "ran", "b": "failed", "c": "skipped on CPU: TF32 is a CUDA matmul mode",
                       "d": "pending", "e": "skipped on CPU: torch.compile is measured on the GPU only"}
    import gpu_check

    assert gpu_check.measured_step_seconds(out) is None  # a dry run never sizes a GPU run


# ----------------------------------------------------------------------------- the scripts run
# the command line of each test below: test -> the script and its arguments, given the test's folder
SCRIPT_RUNS = {
    "test_gpu_throughput_dry_run":
        lambda tmp: ["benchmarks/bench_gpu_throughput.py", "--dry-run", "--json", str(tmp / "bench.json")],
    "test_bench_train_bare_loop_dry_run":
        lambda tmp: ["benchmarks/bench_train.py", "--dry-run", "--skip-demo", "--threads", "1", "--json",
                     str(tmp / "train.json")],
    "test_bench_train_dry_run_with_the_demo":
        lambda tmp: ["benchmarks/bench_train.py", "--dry-run", "--threads", "1", "--json", str(tmp / "train.json")],
    "test_bench_diagnostics_smallest_fisher_mode":
        lambda tmp: ["benchmarks/bench_diagnostics.py", "fisher", "--presets", "tiny", "--n", "4", "--k", "2",
                     "--repeats", "1"],
}


def _script_run(item: pytest.Item, tmp: Path) -> tuple[Path, subprocess.CompletedProcess]:
    return tmp, _run(SCRIPT_RUNS[item.originalname](tmp), tmp)


@pytest.fixture(scope="module")
def script_runs(request, tmp_path_factory):
    """The script runs of the selected tests below, started side by side (tests/process_batch.py),
    each in a folder of its own; a test reads its own with `script_runs.result(request.node.name)`
    -> (folder, CompletedProcess), after `_run` checked that the script ended with status 0."""
    batch = start_side_by_side(request, tmp_path_factory, dict.fromkeys(SCRIPT_RUNS, _script_run))
    yield batch
    batch.close()


def test_gpu_throughput_dry_run(script_runs, request):
    tmp_path, proc = script_runs.result(request.node.name)
    assert "DRY RUN" in proc.stdout and "skipped on CPU" in proc.stdout
    result = json.loads((tmp_path / "bench.json").read_text())
    status = {v["key"]: v["status"] for v in result["variants"]}
    assert status["a"] == status["b"] == status["d"] == "ran"
    assert status["c"].startswith("skipped on CPU") and status["e"].startswith("skipped on CPU")
    d = next(v for v in result["variants"] if v["key"] == "d")
    assert d["tokens_per_s"]["n"] == 2 and d["ratio_vs_a"] > 0  # two interleaved rounds, ratio against (a)
    assert result["goals"]["mfu_met"] is None  # no GPU: nothing judged


def test_bench_train_bare_loop_dry_run(script_runs, request):
    tmp_path, proc = script_runs.result(request.node.name)
    assert "ratio Lightning / plain" in proc.stdout
    result = json.loads((tmp_path / "train.json").read_text())
    assert result["threads"] == 1 and "demo" not in result
    rates = result["bare_loop"]["steps_per_s"]
    assert set(rates) == {"plain", "lightning"} and rates["plain"]["n"] == rates["lightning"]["n"] == 2


@pytest.mark.slow
def test_bench_train_dry_run_with_the_demo(script_runs, request):
    tmp_path, _ = script_runs.result(request.node.name)
    demo = json.loads((tmp_path / "train.json").read_text())["demo"][0]
    assert demo["steps"] == 30 and demo["peak_rss_mb"] > 0  # debug=tiny: 30 steps
    assert set(demo["phases_s"]) == {"data", "training", "analysis", "rest"}


@pytest.mark.slow  # ~12 s here (one subprocess per estimator): kept out of the fast suite
def test_bench_diagnostics_smallest_fisher_mode(script_runs, request):
    script_runs.result(request.node.name)  # the script ran to its end with status 0
