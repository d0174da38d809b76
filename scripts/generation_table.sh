#!/usr/bin/env bash
# The generation table of results/ptb.md: the generation suite (docs/generation.md) on the seed-size
# PTB runs that scripts/ptb_results.sh trains, with their LSTM language model as the reference LM of
# the forward PPL, then one report of them all (its generation columns and quality-diversity figure).
# Resumable: a run that already has eval_test_k0.json is not evaluated again.
#   bash scripts/generation_table.sh [out_dir] [name ...]     # default: outputs/ptb9, the six below
#   GEN_ARGS="gen.samples=200" bash scripts/generation_table.sh # other gen.* settings (docs/generation.md)
set -u
out=${1:-outputs/ptb9}; shift || true
names=(ptb ptb_free_bits ptb_pretrain_fb ptb_bn ptb_cyclical ptb_lm)
[ $# -gt 0 ] && names=("$@")
[ -f "$out/ptb_lm/results.json" ] || {
  echo "error: $out/ptb_lm is not trained: bash scripts/ptb_results.sh $out ptb_lm" >&2; exit 1; }
dirs=()
for name in "${names[@]}"; do
  dir="$out/$name"
  [ -f "$dir/results.json" ] || {
    echo "error: $dir is not trained: bash scripts/ptb_results.sh $out $name" >&2; exit 1; }
  dirs+=("$dir")
  [ -f "$dir/eval_test_k0.json" ] && continue
  # iw_samples=0: the likelihood numbers are the run's own eval_test.json (K = 500)
  python -m vae_text.evaluate checkpoint="$dir" split=test iw_samples=0 reconstruct=false \
    generation=true gen.reference_lm="$out/ptb_lm" num_threads="${THREADS:-1}" progress=false ${GEN_ARGS:-} \
    >> "$out/generation_$name.log" 2>&1 || { echo "error: $name failed: see $out/generation_$name.log" >&2; exit 1; }
done
python -m vae_text.report "${dirs[@]}" --out "$out/generation_report"
