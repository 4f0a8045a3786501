#!/usr/bin/env bash
# The prepared GPU check: one command for a machine with one GPU and no package index.
#
#   1. environment   which python, torch, GPU
#   2. packages      unpack the wheels of .wheels/ that the machine lacks (`make gpu-wheels`
#                    downloads them beforehand) into a private folder put first on PYTHONPATH:
#                    the machine's own torch and packages are never touched; then import
#                    everything the check needs (benchmarks/gpu_preinstalled.txt lists what the
#                    machine is assumed to hold)
#   3. benchmark     benchmarks/bench_gpu_throughput.py: authors'-style loop vs our Lightning
#                    path (fp32, TF32, bf16-mixed, + compile), tokens/s, MFU; a variant that
#                    fails is a row with its error
#   4. plan          steps of the reproduction, sized to the time left (from the measured step
#                    time of the bf16 path, or an assumed one), with a 3x margin on the step time
#   5. reproduction  +experiment=paper_quick with AdamW vs SGD+momentum, paper model, GPT-2's
#                    tokenizer built offline, synthetic stories, logger=none; analysis per run
#   6. compare       python -m backbone_lab.compare on the sweep
#   7. table         one table: tokens/s, MFU, val loss, PC1 row-norm %, k95, drift per row
#
# After every step the summary so far (summary.md / summary.json, with each step's status) is
# rewritten in the results folder and, with GPU_CHECK_COPY_TO, copied there together with
# bench.json, the compare report and the log as soon as they exist: a failure or a kill at any
# step leaves what ran. A failed benchmark, reproduction or compare does not stop the later
# steps; a failed package check or plan does. Exit status 0 when every step is ok.
#
# Budget: GPU_CHECK_BUDGET_S seconds in all (default 480); the reproduction gets what the steps
# before it left over. Every step prints its start time.
#
#   bash benchmarks/gpu_check.sh                    # on the GPU machine
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh   # CPU dry run: toy sizes, same code path
#   bash benchmarks/gpu_check.sh --dry-run             # the same
#
# Environment: GPU_CHECK_PYTHON (default python3), GPU_CHECK_WHEELS (default .wheels),
# GPU_CHECK_OUT (default multirun_outputs/gpu_check/<time>), GPU_CHECK_BUDGET_S (480),
# GPU_CHECK_FORCE_INSTALL=1 (install the pure-Python wheels even when the machine has them),
# GPU_CHECK_COPY_TO=DIR (copy the small result files there after every step).
set -uo pipefail

DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$PWD
PYTHON=${GPU_CHECK_PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.wheels}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
COPY_TO=${GPU_CHECK_COPY_TO:-}
RESULTS=${GPU_CHECK_OUT:-multirun_outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$RESULTS" || exit 2
RESULTS=$(cd "$RESULTS" && pwd)
if [[ -n "$COPY_TO" ]]; then mkdir -p "$COPY_TO" && COPY_TO=$(cd "$COPY_TO" && pwd) || exit 2; fi
SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX") || exit 2
# at the very end, the log's last lines too
trap 'rm -rf "$SITE"; if [[ -n "$COPY_TO" && -f "$RESULTS/gpu_check.log" ]]; then cp "$RESULTS/gpu_check.log" "$COPY_TO/"; fi' EXIT
# everything printed also goes to the results folder (copied out with the rest)
exec > >(tee -a "$RESULTS/gpu_check.log") 2>&1

DRY_FLAG=()
if [[ "$DRY_RUN" == 1 ]]; then DRY_FLAG=(--dry-run); fi

export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
export BACKBONE_LAB_OUTPUT="$RESULTS/runs" BACKBONE_LAB_CACHE="$RESULTS/cache"
# the private site first, then the repository (backbone_lab) and benchmarks/ (progress_lines, mfu)
export PYTHONPATH="$SITE:$REPO:$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

START=$SECONDS
BENCH_JSON="$RESULTS/bench.json"
SWEEP=""
STEP=""
STEP_START=0
FAILED=0
begin() { STEP=$1; STEP_START=$((SECONDS - START)); printf '\n[%4ds] == %s\n' "$STEP_START" "$STEP"; }
# finish RC [--final]: record the step, rewrite the summary so far, copy the results out
finish() {
  local rc=$1; shift
  if [[ "$rc" != 0 && ! ( "$STEP" == 3/* && "$rc" == 3 ) ]]; then FAILED=1; fi
  local extra=()
  if [[ -n "$SWEEP" ]]; then extra+=(--sweep "$SWEEP"); fi
  if [[ -n "$COPY_TO" ]]; then extra+=(--copy-to "$COPY_TO"); fi
  "$PYTHON" benchmarks/gpu_check.py report --out "$RESULTS" --step "$STEP" --rc "$rc" --started "$STEP_START" \
    --ended $((SECONDS - START)) --bench "$BENCH_JSON" --budget "$BUDGET_S" "${extra[@]}" "$@" \
    || echo "    (the summary could not be written)"
}
give_up() {
  printf '\n[%4ds] stopped after step %s: nothing later can run without it (results so far in %s)\n' \
    $((SECONDS - START)) "$STEP" "$RESULTS"
  exit 1
}

begin "1/7 environment (dry run: $DRY_RUN, budget ${BUDGET_S} s, results in $RESULTS)"
"$PYTHON" -c 'import sys, platform; print(f"    python {platform.python_version()} at {sys.executable}")'
rc=$?
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/    /'
fi
if [[ $rc != 0 ]]; then echo "error: no Python at '$PYTHON' (set GPU_CHECK_PYTHON)"; exit 1; fi
finish 0

begin "2/7 packages"
rc=0
if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  FORCE=()
  if [[ "${GPU_CHECK_FORCE_INSTALL:-0}" == 1 ]]; then FORCE=(--force); fi
  "$PYTHON" benchmarks/gpu_check.py install --wheels "$WHEELS" --target "$SITE" "${FORCE[@]}" || rc=$?
else
  echo "    no wheels in $WHEELS: using the packages the machine has"
fi
if [[ $rc == 0 ]]; then "$PYTHON" benchmarks/gpu_check.py check "${DRY_FLAG[@]}" || rc=$?; fi
finish $rc
if [[ $rc != 0 ]]; then give_up; fi

begin "3/7 benchmark (interleaved rounds; the first round of e includes torch.compile)"
"$PYTHON" benchmarks/bench_gpu_throughput.py "${DRY_FLAG[@]}" --rounds 3 --warmup 3 --steps 10 --json "$BENCH_JSON"
rc=$?
case $rc in
  0) ;;
  3) echo "    some variants failed (rows with their errors in bench.json); the others' figures stand" ;;
  *) echo "    the benchmark failed (exit $rc): the reproduction still runs, its steps sized from what bench.json holds" ;;
esac
finish $rc

begin "4/7 plan"
PLAN=$("$PYTHON" benchmarks/gpu_check.py plan "${DRY_FLAG[@]}" --bench "$BENCH_JSON" --left $((BUDGET_S - (SECONDS - START))))
rc=$?
finish $rc
if [[ $rc != 0 || -z "$PLAN" ]]; then give_up; fi
mapfile -t RUN_ARGS <<< "$PLAN"
printf '    %s\n' "${RUN_ARGS[@]}"

begin "5/7 reproduction: +experiment=paper_quick, AdamW vs SGD+momentum"
"$PYTHON" -m backbone_lab +experiment=paper_quick -m "${RUN_ARGS[@]}"
rc=$?
SWEEPS=("$BACKBONE_LAB_OUTPUT"/gpu_check/*/)
if [[ -d "${SWEEPS[-1]}" ]]; then SWEEP=${SWEEPS[-1]%/}; fi
finish $rc

begin "6/7 compare ${SWEEP:-(no sweep folder)}"
if [[ -n "$SWEEP" ]]; then
  "$PYTHON" -m backbone_lab.compare "$SWEEP"
  rc=$?
else
  echo "    the reproduction left no sweep folder: nothing to compare"
  rc=1
fi
finish $rc

begin "7/7 table"
finish 0 --final

if [[ $FAILED == 0 ]]; then
  printf '\n[%4ds] done (budget %s s); results in %s\n' $((SECONDS - START)) "$BUDGET_S" "$RESULTS"
else
  printf '\n[%4ds] done with failures (see the steps in summary.md; budget %s s); results in %s\n' \
    $((SECONDS - START)) "$BUDGET_S" "$RESULTS"
fi
exit $FAILED
