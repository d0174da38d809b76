#!/usr/bin/env bash
# One prepared check of the GPU fast path, every log in one folder and every figure printed with
# the machine's name at the end (figures.txt there):
#   1. the GPU's name (nvidia-smi);
#   2. the cuda-marked tests (pytest -m cuda);
#   3. scripts/benchmark.py at the ptb and the 256 (ptb_large) sizes, eager and with each
#      train.compile mode of COMPILE_MODES;
#   4. a full +experiment=ptb run with its K = 500 test, training cut by train.max_minutes so the
#      whole check ends inside BUDGET_S (the test's readout GFLOP/s against the matmul bound included).
#
#   bash scripts/gpu_check.sh [log_dir]                      # on a GPU machine
#   DATA_DIR=<corpus> bash scripts/gpu_check.sh --dry-run [log_dir]   # CPU, tiny corpus: seconds
#
# --dry-run runs every step on the CPU at the smoke sizes on DATA_DIR's ptb.{train,valid,test}.txt
# (tests/test_gpu_check.py), collecting the cuda tests instead of running them.
# Variables: COMPILE_MODES (default "compile cudagraphs"; none in --dry-run, where train.compile
# may not exist), BUDGET_S (the wall-time guard, default 450 s: well inside 9 minutes), PYTHON.
# Each step runs under `timeout` with at most the time left; a step that fails or is cut short is
# reported and the check goes on; the exit status is 1 if any did.
set -u
dry=0
[ "${1:-}" = --dry-run ] && { dry=1; shift; }
logs=${1:-gpu_check_$(date -u +%Y%m%d_%H%M%S)}
mkdir -p "$logs"
py=${PYTHON:-python}
budget=${BUDGET_S:-450}
figures="$logs/figures.txt"
: > "$figures"
failed=0

if (( dry )); then
  [ -n "${DATA_DIR:-}" ] || { echo "--dry-run needs DATA_DIR=<folder with ptb.{train,valid,test}.txt>" >&2; exit 2; }
  modes=${COMPILE_MODES:-}
  machine="dry run on $(uname -n) (CPU)"
  sizes=("ptb:+experiment=smoke" "256:+experiment=smoke model.embed_size=25 model.decoder_hidden=26")
  data=(data.dir="$DATA_DIR" data.cache_dir="$DATA_DIR/cache" data.hub=null train.num_threads=1)
  bench=(--steps 4 --warmup 1 --block 2)
  run_args=(+experiment=smoke train.max_steps=6 eval.iw_samples=12)
  tests=(-m cuda --collect-only -q tests/test_cuda.py tests/test_cuda_eval.py)  # the collection: quick
else
  modes=${COMPILE_MODES-compile cudagraphs}
  machine=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
  machine="${machine:-no nvidia-smi} on $(uname -n)"
  sizes=("ptb:+experiment=ptb" "256:+experiment=ptb_large")
  data=()
  bench=(--steps 150 --warmup 30)
  run_args=(+experiment=ptb eval.iw_samples=500)
  tests=(-m cuda -q tests/)
fi
echo "machine: $machine" | tee -a "$figures"

left() { echo $(( budget - SECONDS )); }

step() {  # name cap_s command...: at most cap_s (and the time left), its output in $logs/name.log
  local name=$1 cap=$2
  shift 2
  local rest
  rest=$(left)
  if (( rest < 5 )); then
    echo "$name: not run, the ${budget} s budget is spent" | tee -a "$figures"
    failed=1
    return
  fi
  (( cap > rest )) && cap=$rest
  local began=$SECONDS
  timeout --kill-after=5 "$cap" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( SECONDS - began )) s (cap $cap s)$( ((rc == 124)) && echo ': cut short')" \
    | tee -a "$figures"
  (( rc == 0 )) || failed=1
}

nvidia-smi > "$logs/nvidia-smi.log" 2>&1 || echo "no nvidia-smi" >> "$logs/nvidia-smi.log"
step cuda_tests 100 "$py" -m pytest -p no:cacheprovider "${tests[@]}"

for size in "${sizes[@]}"; do
  label=${size%%:*}
  read -r -a args <<< "${size#*:}"
  for mode in eager $modes; do
    compile=()
    [ "$mode" = eager ] || compile=(train.compile="$mode")
    step "bench_${label}_$mode" 50 "$py" scripts/benchmark.py "${args[@]}" "${data[@]}" "${compile[@]}" "${bench[@]}"
    grep -E "^(device|machine|load average|train tokens/s|project / bare|peak)" "$logs/bench_${label}_$mode.log" \
      | sed "s/^/  bench $label $mode | /" >> "$figures"
  done
done

# training gets what is left less the K = 500 test's reserve (about a minute on an H200)
minutes=$(awk -v s="$(( $(left) - 90 ))" 'BEGIN { m = s / 60; if (m < 0.1) m = 0.1; printf "%.2f", m }')
step ptb_run "$(left)" "$py" -m vae_text.train "${run_args[@]}" "${data[@]}" train.progress=false \
  train.max_minutes="$minutes" hydra.run.dir="$logs/ptb_run"
[ -f "$logs/ptb_run/eval_test.json" ] && "$py" - "$logs/ptb_run/eval_test.json" >> "$figures" 2>&1 <<'EOF'
import json, sys
out = json.load(open(sys.argv[1]))
for key in ("iw_samples", "nll_iw", "ppl_iw", "mi", "au", "seconds", "readout_gflops", "matmul_bound_gflops"):
    if key in out:
        print(f"  ptb run test | {key}: {out[key]:.4g}" if isinstance(out[key], float) else f"  ptb run test | {key}: {out[key]}")
EOF

echo "total: $SECONDS s of the ${budget} s budget" >> "$figures"
echo "== figures ($machine), logs in $logs"
cat "$figures"
exit $failed
