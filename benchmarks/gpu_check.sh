#!/usr/bin/env bash
# The prepared GPU check: one command for a machine with one GPU and no registry access.
#
#   1. environment   which python, torch, GPU
#   2. packages      install the wheels of .wheels/ that the machine lacks (`make gpu-wheels`
#                    downloads them beforehand), into a private folder put first on PYTHONPATH:
#                    the machine's own torch and packages are never touched
#   3. benchmark     benchmarks/bench_gpu_throughput.py: authors'-style loop vs our Lightning
#                    path (fp32, TF32, bf16-mixed, + compile), tokens/s, MFU
#   4. plan          steps of the reproduction, sized to the time left (from the measured step
#                    time of the bf16 path; a conservative guess when there is none)
#   5. reproduction  +experiment=paper_quick with AdamW vs SGD+momentum, paper model, GPT-2's
#                    tokenizer built offline, synthetic stories, logger=none; analysis per run
#   6. compare       python -m backbone_lab.compare on the sweep
#   7. table         one table: tokens/s, MFU, val loss, PC1 row-norm %, k95, drift per row
#
# Budget: GPU_CHECK_BUDGET_S seconds in all (default 480 = 8 min on an H100); the reproduction
# gets what the steps before it left over. Every step prints its start time.
#
#   bash benchmarks/gpu_check.sh                    # on the GPU machine
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh   # CPU dry run: toy sizes, same code path
#   bash benchmarks/gpu_check.sh --dry-run             # the same
#
# Environment: GPU_CHECK_PYTHON (default python3), GPU_CHECK_WHEELS (default .wheels),
# GPU_CHECK_OUT (default multirun_outputs/gpu_check/<time>), GPU_CHECK_BUDGET_S (480),
# GPU_CHECK_FORCE_INSTALL=1 (install the pure-Python wheels even when the machine has them),
# GPU_CHECK_COPY_TO=DIR (copy the small result files there at the end: summary, bench, compare).
set -euo pipefail

DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
PYTHON=${GPU_CHECK_PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.wheels}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
RESULTS=${GPU_CHECK_OUT:-multirun_outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")
trap 'rm -rf "$SITE"' EXIT

DRY_FLAG=()
if [[ "$DRY_RUN" == 1 ]]; then DRY_FLAG=(--dry-run); fi

export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
export BACKBONE_LAB_OUTPUT="$RESULTS/runs" BACKBONE_LAB_CACHE="$RESULTS/cache"
# the private site first, then the repository (backbone_lab) and benchmarks/ (progress_lines, mfu)
export PYTHONPATH="$SITE:$REPO:$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

START=$SECONDS
step() { printf '\n[%4ds] == %s\n' $((SECONDS - START)) "$*"; }

step "1/7 environment (dry run: $DRY_RUN, budget ${BUDGET_S} s, results in $RESULTS)"
"$PYTHON" -c 'import sys, platform; print(f"    python {platform.python_version()} at {sys.executable}")'
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/    /'
fi

step "2/7 packages"
if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  FORCE=()
  if [[ "${GPU_CHECK_FORCE_INSTALL:-0}" == 1 ]]; then FORCE=(--force); fi
  "$PYTHON" benchmarks/gpu_check.py install --wheels "$WHEELS" --target "$SITE" "${FORCE[@]}"
else
  echo "    no wheels in $WHEELS: using the packages the machine has"
fi
"$PYTHON" benchmarks/gpu_check.py check "${DRY_FLAG[@]}"

step "3/7 benchmark (interleaved rounds; the first round of e includes torch.compile)"
BENCH_JSON="$RESULTS/bench.json"
if ! "$PYTHON" benchmarks/bench_gpu_throughput.py "${DRY_FLAG[@]}" --rounds 3 --warmup 3 --steps 10 --json "$BENCH_JSON"; then
  echo "    the benchmark failed: the reproduction still runs, its steps chosen conservatively"
fi

step "4/7 plan"
PLAN=$("$PYTHON" benchmarks/gpu_check.py plan "${DRY_FLAG[@]}" --bench "$BENCH_JSON" --left $((BUDGET_S - (SECONDS - START))))
mapfile -t RUN_ARGS <<< "$PLAN"
printf '    %s\n' "${RUN_ARGS[@]}"

step "5/7 reproduction: +experiment=paper_quick, AdamW vs SGD+momentum"
"$PYTHON" -m backbone_lab +experiment=paper_quick -m "${RUN_ARGS[@]}"
SWEEPS=("$BACKBONE_LAB_OUTPUT"/gpu_check/*/)
SWEEP=${SWEEPS[-1]%/}

step "6/7 compare $SWEEP"
"$PYTHON" -m backbone_lab.compare "$SWEEP"

step "7/7 table"
"$PYTHON" benchmarks/gpu_check.py table --bench "$BENCH_JSON" --sweep "$SWEEP" --out "$RESULTS" \
  --elapsed $((SECONDS - START)) --budget "$BUDGET_S"

if [[ -n "${GPU_CHECK_COPY_TO:-}" ]]; then
  mkdir -p "$GPU_CHECK_COPY_TO"
  cp "$RESULTS/summary.md" "$RESULTS/summary.json" "$GPU_CHECK_COPY_TO/"
  [[ -f "$BENCH_JSON" ]] && cp "$BENCH_JSON" "$GPU_CHECK_COPY_TO/"
  cp "$SWEEP/compare/report.md" "$GPU_CHECK_COPY_TO/compare_report.md"
  cp "$SWEEP/compare/runs.csv" "$GPU_CHECK_COPY_TO/compare_runs.csv"
  echo "copied the results to $GPU_CHECK_COPY_TO"
fi
printf '\n[%4ds] done (budget %s s)\n' $((SECONDS - START)) "$BUDGET_S"
