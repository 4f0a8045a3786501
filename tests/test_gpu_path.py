"""The fast GPU path, checked on CPU: chunked cross-entropy, fused AdamW decision, vocabulary
padding, automatic DataLoader workers, no host syncs in the training step, torch.compile.

GPU-only behaviour (fused AdamW kernels, CUDA sync detection) is tested where a GPU exists and
skipped otherwise; everything else runs on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from backbone_lab.cross_entropy import ChunkedCrossEntropy, chunked_cross_entropy, token_cross_entropy

CUDA = torch.cuda.is_available()


# ----------------------------------------------------------------------------- chunked CE
def _case(n=37, v=101, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, v, generator=g)).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::5] = -100  # ignored rows
    return logits, targets


@pytest.mark.parametrize("chunk_rows", [1, 8, 37, 1000])
def test_chunked_ce_equals_torch_on_fp32_logits(chunk_rows):
    logits, targets = _case()
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ours = chunked_cross_entropy(a, targets, chunk_rows=chunk_rows)
    ref = F.cross_entropy(b, targets, ignore_index=-100, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert torch.all(ours[::5] == 0)
    w = torch.randn(len(targets))  # a non-uniform upstream gradient
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)
    assert torch.all(a.grad[::5] == 0)
    assert torch.equal(a.detach(), logits)  # the input is never modified in place


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_ce_on_half_logits_equals_torch_on_their_fp32_upcast(dtype):
    logits, targets = _case(n=64, v=300, dtype=dtype)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ours = chunked_cross_entropy(a, targets, chunk_rows=16)
    ref = F.cross_entropy(b.float(), targets, ignore_index=-100, reduction="none")
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    w = torch.rand(len(targets))
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    assert a.grad.dtype == dtype
    # same fp32 value up to a few roundings, then one rounding to the half dtype: at most one
    # half-precision ulp apart, and nearly always identical
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=2 ** -7, atol=1e-7)
    assert (a.grad == b.grad).float().mean() > 0.99


def test_token_cross_entropy_keeps_fp32_bit_identical_and_chunks_half():
    logits, targets = _case(n=24, v=50)
    logits3, targets3 = logits.view(4, 6, 50), targets.view(4, 6)
    ref = F.cross_entropy(logits3.float().flatten(0, 1), targets3.flatten(), ignore_index=-100, reduction="none")
    assert torch.equal(token_cross_entropy(logits3, targets3), ref.view(4, 6))  # fp32: torch, bit for bit
    half = logits3.bfloat16().requires_grad_()
    out = token_cross_entropy(half, targets3)
    assert out.shape == (4, 6) and out.grad_fn.next_functions[0][0].name().startswith("ChunkedCrossEntropy")


def test_chunked_ce_of_a_strided_view_and_bad_shapes():
    padded, targets = _case(n=10, v=64, dtype=torch.bfloat16)
    view = padded[:, :50]  # what a vocabulary-padded head returns
    targets = targets.clamp(max=49)
    ref = F.cross_entropy(view.float(), targets, ignore_index=-100, reduction="none")
    torch.testing.assert_close(chunked_cross_entropy(view, targets, chunk_rows=3), ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"logits \(N, V\) and targets \(N,\)"):
        chunked_cross_entropy(view[None], targets)


def _peak_bytes(fn) -> int:
    """Peak of (bytes allocated - bytes freed) while `fn` runs, from the profiler's allocator
    events (CPU allocator; the same count torch.cuda.max_memory_allocated gives on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def test_chunked_ce_holds_one_fp32_chunk_not_a_full_fp32_copy():
    """bf16 logits (N, V): F.cross_entropy(logits.float()) allocates and saves N×V fp32 tensors;
    the chunked function's forward peaks at one fp32 chunk, saves nothing of size N×V beyond
    the bf16 logits themselves, and its backward allocates the bf16 gradient (N×V×2 bytes, the
    size of the logits) plus one fp32 chunk."""
    n, v, rows = 256, 2048, 16
    logits, targets = _case(n=n, v=v, dtype=torch.bfloat16)
    full_fp32, chunk_fp32 = n * v * 4, rows * v * 4  # 2 MiB vs 128 KiB
    slack = 64 * 1024  # per-row vectors (N fp32 loss / logsumexp), allocator rounding

    saved = []

    def record(t):
        saved.append(t)
        return t

    def forward(fn):
        x = logits.clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(record, lambda t: t):
            out = fn(x)
        return x, out

    def ours(x):
        return chunked_cross_entropy(x, targets, chunk_rows=rows)

    def ref(x):
        return F.cross_entropy(x.float(), targets, ignore_index=-100, reduction="none")

    x, out = forward(ours)
    saved_ours = [t for t in saved if t.numel() == n * v]
    assert all(t.dtype == torch.bfloat16 and t.data_ptr() == x.data_ptr() for t in saved_ours)  # the input itself
    saved.clear()
    forward(ref)
    assert any(t.numel() == n * v and t.dtype == torch.float32 for t in saved)  # the fp32 log-softmax
    saved.clear()

    x = logits.clone().requires_grad_()
    fwd_ours = _peak_bytes(lambda: ours(x))
    fwd_ref = _peak_bytes(lambda: ref(x))
    assert fwd_ours <= chunk_fp32 + slack, (fwd_ours, chunk_fp32)
    assert fwd_ref >= 2 * full_fp32  # the fp32 copy and its log-softmax

    out_ours, out_ref = ours(x), ref(x)
    bwd_ours = _peak_bytes(lambda: torch.autograd.grad(out_ours.sum(), x))
    bwd_ref = _peak_bytes(lambda: torch.autograd.grad(out_ref.sum(), x))
    assert bwd_ours <= n * v * 2 + chunk_fp32 + slack, (bwd_ours, chunk_fp32)
    assert bwd_ref >= full_fp32 + n * v * 2
    print(f"peak extra bytes, bf16 logits {n}x{v}, chunk {rows} rows: forward {fwd_ours} (chunked) vs "
          f"{fwd_ref} (F.cross_entropy on the fp32 upcast); backward {bwd_ours} vs {bwd_ref}")


def test_chunked_ce_rejects_a_second_derivative():
    logits, targets = _case(n=4, v=7)
    x = logits.clone().requires_grad_()
    (g,) = torch.autograd.grad(ChunkedCrossEntropy.apply(x, targets, -100, 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


# ----------------------------------------------------------------------------- fused AdamW
def test_fused_adam_only_for_plain_adam_on_cuda():
    from functools import partial

    from backbone_lab.lit_module import fused_adam_applies

    adamw = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.5)
    assert not fused_adam_applies(adamw, torch.device("cpu"))
    assert not fused_adam_applies(adamw, "cpu")
    assert fused_adam_applies(adamw, torch.device("cuda", 0))
    assert fused_adam_applies(partial(torch.optim.Adam, lr=1e-3), "cuda")
    assert not fused_adam_applies(adamw, "cuda", sharded=True)  # FSDP2 DTensors: torch's default
    for chosen in ({"fused": False}, {"foreach": True}, {"fused": True}, {"differentiable": True}):
        assert not fused_adam_applies(partial(torch.optim.AdamW, lr=1e-3, **chosen), "cuda"), chosen
    assert not fused_adam_applies(partial(torch.optim.SGD, lr=0.1), "cuda")
    assert not fused_adam_applies(torch.optim.AdamW, "cuda")  # not a config partial


def _lit_module(optimizer, **model):
    from backbone_lab.lit_module import BackboneLitModule
    from backbone_lab.model import ModelConfig
    from backbone_lab.objective import ObjectiveConfig, ScheduleConfig
    from backbone_lab.trainer import LoopConfig

    cfg = ModelConfig(**{"vocab_size": 97, "n_layer": 1, "d_model": 16, "n_head": 2, "d_ff": 32, "seq_len": 8, **model})
    return BackboneLitModule(cfg, optimizer, ScheduleConfig(warmup=2), ObjectiveConfig(), LoopConfig(max_steps=4))


def test_configure_optimizers_keeps_the_cpu_optimizer_unchanged():
    from functools import partial

    module = _lit_module(partial(torch.optim.AdamW, lr=1e-3))
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is None and optimizer.defaults["foreach"] is None


@pytest.mark.skipif(not CUDA, reason="fused AdamW needs a CUDA device")
def test_configure_optimizers_fuses_adamw_on_cuda():
    from functools import partial

    module = _lit_module(partial(torch.optim.AdamW, lr=1e-3)).cuda()
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True


# ----------------------------------------------------------------------------- vocab padding
def test_padded_vocab_keeps_the_logit_width_and_grows_the_table():
    from backbone_lab.model import GPT, ModelConfig, expected_num_parameters

    base = dict(vocab_size=97, n_layer=1, d_model=16, n_head=2, d_ff=32, seq_len=8)
    plain, padded = GPT(ModelConfig(**base)), GPT(ModelConfig(**base, pad_vocab_multiple=64))
    assert padded.tok_emb.weight.shape == (128, 16) and padded.cfg.padded_vocab_size == 128
    assert padded(torch.randint(0, 97, (2, 8))).shape == (2, 8, 97)
    grown = (128 - 97) * 16  # extra rows of the (tied) embedding / head
    assert padded.num_parameters() == plain.num_parameters() + grown == expected_num_parameters(padded.cfg)


def test_paper_preset_is_unpadded_by_default():
    from conftest import compose_config
    from omegaconf import OmegaConf

    from backbone_lab.model import GPT

    cfg = OmegaConf.to_object(compose_config(["model=paper"]).model).with_vocab(50257)
    assert cfg.pad_vocab_multiple == 1
    with torch.device("meta"):
        assert GPT(cfg).num_parameters() == 51_045_888


def test_training_with_vocab_padding_64_runs(tmp_path):
    from conftest import compose_config

    from backbone_lab.train import train

    cfg = compose_config(["debug=tiny", f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                          "model.pad_vocab_multiple=64", "train.max_steps=3", "train.eval_every=3",
                          "snapshots.every=3", "analyze=false"])
    result = train(cfg)
    assert result["status"] == "done" and result["steps_done"] == 3
    assert result["final_val_loss"] == result["final_val_loss"]  # finite, not NaN


# ----------------------------------------------------------------------------- loader workers
def test_loader_workers_auto_is_zero_on_cpu_and_capped_on_gpu(monkeypatch):
    from backbone_lab.data import config as data_config
    from backbone_lab.data.config import DataConfig

    auto = DataConfig()
    assert auto.num_workers is None and auto.loader_workers(on_gpu=False) == 0
    monkeypatch.setattr(data_config, "usable_cpu_count", lambda: 16)
    assert auto.loader_workers(on_gpu=True) == 4
    monkeypatch.setattr(data_config, "usable_cpu_count", lambda: 2)
    assert auto.loader_workers(on_gpu=True) == 2
    assert DataConfig(num_workers=3).loader_workers(on_gpu=False) == 3
    assert DataConfig(num_workers=0).loader_workers(on_gpu=True) == 0
    with pytest.raises(ValueError, match="data.num_workers must be >= 0 or null"):
        DataConfig(num_workers=-1)


# ----------------------------------------------------------------------------- corpus cache
def test_synthetic_corpus_is_cached_by_its_generator_inputs(tmp_path, monkeypatch):
    from backbone_lab.data import synthetic
    from backbone_lab.data.config import DataConfig
    from backbone_lab.data.corpus import load_corpus
    from backbone_lab.data.sources.synthetic import synthetic_cache_path

    calls = []
    real = synthetic.generate_story
    monkeypatch.setattr(synthetic, "generate_story", lambda rng: calls.append(1) or real(rng))

    def corpus(**kw):
        return load_corpus(DataConfig(source="synthetic", options=dict(n_train_stories=200, n_val_stories=20, synthetic_seed=3), **kw), cache_dir=tmp_path)

    first = corpus()
    assert len(calls) == 220 and synthetic_cache_path(tmp_path, 220, 3).exists()
    calls.clear()
    again = corpus()
    assert calls == []  # a cache hit: the generator is not called at all
    assert again.train == first.train and again.val == first.val and again.train_sha256 == first.train_sha256
    assert first.train == load_corpus(DataConfig(source="synthetic", options=dict(n_train_stories=200, n_val_stories=20, synthetic_seed=3))).train
    calls.clear()  # (no cache_dir: no cache)
    load_corpus(DataConfig(source="synthetic", options=dict(n_train_stories=200, n_val_stories=20, synthetic_seed=4)), cache_dir=tmp_path)
    assert len(calls) == 220  # another seed is another entry
    calls.clear()
    monkeypatch.setattr(synthetic, "RECIPE_VERSION", synthetic.RECIPE_VERSION + 1)
    assert corpus().train == first.train and len(calls) == 220  # a new recipe never reads the old entry
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_damaged_corpus_cache_is_regenerated(tmp_path, caplog):
    from backbone_lab.data.sources.synthetic import cached_synthetic_stories, synthetic_cache_path

    stories = cached_synthetic_stories(30, 1, tmp_path)
    path = synthetic_cache_path(tmp_path, 30, 1)
    path.write_text(path.read_text().replace(" was ", " is ", 1))  # a story no longer matches its hash
    with caplog.at_level("WARNING"):
        assert cached_synthetic_stories(30, 1, tmp_path) == stories
    assert "damaged synthetic-story cache" in caplog.text
    assert cached_synthetic_stories(30, 1, tmp_path) == stories


# ----------------------------------------------------------------------------- host syncs
HOST_READS = ("item", "__float__", "__int__", "__bool__", "tolist")


class HostReadCounter:
    """Counts tensor -> Python reads (`HOST_READS`, the calls that make a GPU run wait for the
    device) by patching `torch.Tensor`, split into reads inside `training_step` and outside it,
    each recorded as (method, "file:line" of the caller); `steps_outside` holds the optimizer
    step count at each read outside."""

    def __init__(self):
        self.inside: list[tuple[str, str]] = []
        self.outside: list[tuple[str, str]] = []
        self.steps_outside: list[int] = []
        self.in_step = False
        self.module = None

    def __enter__(self):
        import sys

        self._originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

        def counted(name, original):
            def read(tensor, *args, **kwargs):
                frame = sys._getframe(1)
                where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
                (self.inside if self.in_step else self.outside).append((name, where))
                if not self.in_step:
                    trainer = getattr(self.module, "_trainer", None)
                    self.steps_outside.append(trainer.global_step if trainer is not None else -1)
                return original(tensor, *args, **kwargs)
            return read

        for name, original in self._originals.items():
            setattr(torch.Tensor, name, counted(name, original))
        return self

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)

    def watch_training_step(self, module) -> None:
        self.module = module
        step = module.training_step

        def watched(*args, **kwargs):
            self.in_step = True
            try:
                return step(*args, **kwargs)
            finally:
                self.in_step = False

        module.training_step = watched


def _tiny_fit(tmp_path, accelerator="cpu", precision="32-true", max_steps=6, counter=None, progress_bar=False,
              logger=False):
    """A real tiny run: our datamodule and LightningModule under Lightning's Trainer (no logger,
    no progress bar, no callbacks), 2 accumulated micro-batches, clipping, divergence bound."""
    from functools import partial

    from backbone_lab.data.config import DataConfig
    from backbone_lab.data.datamodule import BackboneDataModule
    from backbone_lab.lit_module import BackboneLitModule
    from backbone_lab.model import ModelConfig
    from backbone_lab.objective import ObjectiveConfig, ScheduleConfig
    from backbone_lab.trainer import LoopConfig

    import lightning as L

    L.seed_everything(0, verbose=False)
    data = DataConfig(options=dict(n_train_stories=200, n_val_stories=20), vocab_size=300, n_codewords=16, micro_batch_size=4,
                      n_eval=8, n_val=8, cache_dir=str(tmp_path / "cache"))
    dm = BackboneDataModule(data, seq_len=64, seed=0)
    dm.setup("fit")
    dm.set_start_step(0, 2)
    loop = LoopConfig(max_steps=max_steps, accumulate=2, log_every=3, divergence_loss=100.0)
    model = ModelConfig(n_layer=1, d_model=32, n_head=2, d_ff=64, seq_len=64).with_vocab(dm.vocab_size)
    module = BackboneLitModule(model, partial(torch.optim.AdamW, lr=1e-3), ScheduleConfig(warmup=2),
                               ObjectiveConfig(), loop)
    if counter is not None:
        counter.watch_training_step(module)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=max_steps,
                        accumulate_grad_batches=2, gradient_clip_val=1.0, log_every_n_steps=3, logger=logger,
                        enable_progress_bar=bool(progress_bar), callbacks=[progress_bar] if progress_bar else None,
                        enable_checkpointing=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    return trainer, module


def _inside(package, where: str) -> bool:
    """Whether a "file:line" caller lies in `package`'s own directory. A substring test would not
    do: a clone in a folder named `backbone_lab` puts its .venv (torch, lightning) under that name."""
    from pathlib import Path

    root = Path(package.__file__).resolve().parent
    return Path(where.rsplit(":", 1)[0]).resolve().is_relative_to(root)


def test_the_training_step_reads_nothing_back_to_the_host(tmp_path):
    import lightning as lightning_package
    import lightning_fabric

    import backbone_lab

    with HostReadCounter() as counter:
        trainer, _ = _tiny_fit(tmp_path, counter=counter)
    assert trainer.global_step == 6
    assert counter.inside == []  # training_step itself: zero host reads in 12 micro-batches
    ours = [(m, w) for m, w in counter.outside if _inside(backbone_lab, w)]
    lightning = [(m, w) for m, w in counter.outside if _inside(lightning_package, w) or _inside(lightning_fabric, w)]
    others = [(m, w) for m, w in counter.outside if (m, w) not in ours + lightning]
    print("outside training_step:", "\n ours:", ours, "\n lightning:", lightning, "\n others:", others[:5])
    # the one host sync per train.log_every steps: the divergence check at steps 3 and 6
    assert [m for m, _ in ours] == ["tolist", "tolist"] and all("lit_module.py" in w for _, w in ours)
    assert lightning == []  # nothing logged in training_step makes Lightning read a tensor per step
    # torch's own reads, of CPU tensors in any run: AdamW's step counters (kept on the CPU unless
    # fused/capturable) and the DataLoader iterator's base seed
    assert {w.rsplit("site-packages/", 1)[-1].split(":")[0] for _, w in others} <= {
        "torch/optim/optimizer.py", "torch/utils/data/dataloader.py"}


def test_with_a_logger_lightning_reads_the_logged_values_every_log_every_steps_only(tmp_path):
    """Lightning's own host reads: `_LoggerConnector.log_metrics` turns the logged tensors into
    numbers (`convert_tensors_to_scalars` -> `.item()`) when it writes the loggers, every
    `log_every_n_steps` (= train.log_every) optimizer steps, after the step."""
    from lightning.pytorch.loggers import CSVLogger

    with HostReadCounter() as counter:
        _tiny_fit(tmp_path, counter=counter, logger=CSVLogger(tmp_path / "logs"))
    assert counter.inside == []
    import lightning as lightning_package

    lightning = [step for (_, w), step in zip(counter.outside, counter.steps_outside) if _inside(lightning_package, w)]
    assert lightning and set(lightning) == {3, 6}


def test_the_progress_line_shows_the_losses_read_at_each_sync(tmp_path, capsys):
    """The progress line (plain mode, as in a log file) takes its losses from the module's sync
    points: one more read there (`last_micro_batch_losses`), none in the training step."""
    import backbone_lab
    from backbone_lab.callbacks.progress import StepProgress

    with HostReadCounter() as counter:
        trainer, module = _tiny_fit(tmp_path, counter=counter, progress_bar=StepProgress(plain=True, plain_every_s=0))
    assert counter.inside == []
    ours = [step for (_, w), step in zip(counter.outside, counter.steps_outside) if _inside(backbone_lab, w)]
    assert sorted(set(ours)) == [3, 6] and len(ours) == 4  # divergence check + losses, at steps 3 and 6 only
    numbers = module.progress_numbers
    assert numbers["step"] == 6
    loss, lm, probe, n_probe = [float(t) for t in module._last_parts]
    assert [numbers["loss"], numbers["lm_loss"]] == pytest.approx([loss, lm]) and numbers["n_probe"] == n_probe
    assert numbers["probe_loss"] == (pytest.approx(probe) if n_probe else None)
    lines = capsys.readouterr().out.splitlines()
    shown = [ln for ln in lines if ln.startswith("step ")]
    assert [ln.split(" · ")[0] for ln in shown] == ["step 3/6", "step 6/6"], lines
    shown_probe = "–" if numbers["probe_loss"] is None else f"{numbers['probe_loss']:.3f}"
    assert f"lm {numbers['lm_loss']:.3f} · probe {shown_probe} · " in shown[-1]
    assert shown[-1].endswith("tok/s") and "\x1b" not in "".join(lines)  # no MFU on a CPU, no control codes


@pytest.mark.skipif(not CUDA, reason="CUDA synchronisation checks need a GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_the_cuda_training_step_never_synchronises(tmp_path, precision):
    """On a GPU torch itself reports every synchronising call (`set_sync_debug_mode`), including
    those made inside C++ (blocking copies, data-dependent shapes) that `HostReadCounter` cannot see."""

    class SyncIsError(HostReadCounter):
        def watch_training_step(self, module) -> None:
            step = module.training_step

            def watched(*args, **kwargs):
                torch.cuda.set_sync_debug_mode("error")
                try:
                    return step(*args, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")

            module.training_step = watched

    trainer, module = _tiny_fit(tmp_path, accelerator="gpu", precision=precision, counter=SyncIsError())
    assert trainer.global_step == 6 and module.optimizers().optimizer.defaults["fused"] is True


# ----------------------------------------------------------------------------- torch.compile
def test_compile_is_off_unless_asked_for():
    from conftest import compose_config

    from backbone_lab.trainer import LoopConfig

    assert LoopConfig().compile is False and compose_config([]).train.get("compile", False) is False
    from functools import partial

    assert _lit_module(partial(torch.optim.AdamW, lr=1e-3))._compiled_loss is None


@pytest.mark.slow
def test_compiled_training_runs_two_steps_on_cpu(tmp_path):
    """`train.compile=true` on the CPU (inductor's C++ backend; about a minute cold, hence slow):
    two steps, the same evaluation as the eager run up to float rounding."""
    from conftest import compose_config

    from backbone_lab.train import train

    def run(name, *extra):
        return train(compose_config(["debug=tiny", f"run_dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}",
                                     "train.max_steps=2", "train.eval_every=2", "snapshots.every=2", "analyze=false",
                                     *extra]))

    compiled, eager = run("compiled", "train.compile=true"), run("eager")
    assert compiled["status"] == "done" and compiled["steps_done"] == 2
    assert compiled["final_val_loss"] == pytest.approx(eager["final_val_loss"], rel=1e-4)
