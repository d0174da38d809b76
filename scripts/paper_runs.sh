#!/usr/bin/env bash
# The published recipe at the literature's sizes (results/ptb.md, "Published recipe, literature
# sizes"): the four ptb_paper_* experiments, one at a time, each to its stopping rule (the fifth lr
# halving, at most 100 epochs), then its K = 500 test. Many hours each on a CPU, so resumable: a run
# with results.json is skipped, one with checkpoints/last.pt continues where it stopped.
#   bash scripts/paper_runs.sh [out_dir] [name ...]     # names: lm vae fb pretrain_fb
#   THREADS=1 bash scripts/paper_runs.sh                # leave a core free (default: 2)
# With a GPU (nvidia-smi found) the runs share it side by side, at most JOBS at once (default 4;
# JOBS=1 keeps them one at a time); a failed run is reported and the others go on.
set -u
out=${1:-outputs/paper}; shift || true
names=(lm vae fb pretrain_fb)
[ $# -gt 0 ] && names=("$@")
mkdir -p "$out"
cap=1
command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 && cap=${JOBS:-4}

one() {  # name: trains (or resumes) ptb_paper_<name> and tests it, its output in <out>/ptb_paper_<name>.log
  local name=$1 dir="$out/ptb_paper_$1"
  [ -f "$dir/results.json" ] && { echo "ptb_paper_$name: done"; return 0; }
  local resume=()
  [ -f "$dir/checkpoints/last.pt" ] && resume=(train.resume="$dir")
  python -m vae_text.train +experiment="ptb_paper_$name" train.num_threads="${THREADS:-2}" \
    train.progress=false "${resume[@]}" hydra.run.dir="$dir" >> "$out/ptb_paper_$name.log" 2>&1 \
    || { echo "ptb_paper_$name failed: see $out/ptb_paper_$name.log" >&2; return 1; }
}

failed=0
if (( cap == 1 )); then
  for name in "${names[@]}"; do one "$name" || exit 1; done
else
  for name in "${names[@]}"; do
    while (( $(jobs -rp | wc -l) >= cap )); do wait -n || failed=1; done
    one "$name" &
  done
  while (( $(jobs -rp | wc -l) > 0 )); do wait -n || failed=1; done
fi
# the table and figures; the stars of report_validation.png are the published test figures
# (docs/published.md; an IW-PPL is 21.917 x ln(PPL) nats a PTB test sentence)
marks=()
for m in ptb_paper_lm=101.04 ptb_paper_vae=101.24 ptb_paper_pretrain_fb=100.23; do
  [ -d "$out/${m%%=*}" ] && marks+=(--mark "$m")  # only runs that are there
done
python -m vae_text.report "$out" --out "$out/report" "${marks[@]}"
exit $failed
