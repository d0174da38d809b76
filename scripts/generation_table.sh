#!/usr/bin/env bash
# The generation table of results/ptb.md: the generation suite (docs/generation.md) on the seed-size
# PTB runs that scripts/ptb_results.sh trains, then one report of them all (its generation columns
# and quality-diversity figure). The forward PPL's reference LM is the Transformer LM of the same
# script (ptb_transformer_lm, test NLL 101.2): stronger than every row and trained apart from them,
# so the LSTM LM's samples are not scored by the LSTM LM itself. 10,000 prior samples a run (the
# suite's default is 1,000): the reverse LM then has a quarter of PTB's training sentences to learn
# from. The data's own row (generation_data.json): the same metrics on 10,000 real training sentences.
# Resumable: a run that already has eval_test_k0.json is not evaluated again.
#   bash scripts/generation_table.sh [out_dir] [name ...]     # default: outputs/ptb9, the six below
#   REFERENCE_LM=outputs/ptb9/ptb_transformer_lm bash scripts/generation_table.sh outputs/gen
#                                       # the reference LM elsewhere (default: <out_dir>/ptb_transformer_lm)
#   GEN_ARGS="gen.samples=1000" bash scripts/generation_table.sh  # gen.* settings instead of the default
set -u
out=${1:-outputs/ptb9}; shift || true
reference=${REFERENCE_LM:-$out/ptb_transformer_lm}
names=(ptb ptb_free_bits ptb_pretrain_fb ptb_bn ptb_cyclical ptb_lm)
[ $# -gt 0 ] && names=("$@")
[ -f "$reference/results.json" ] || {
  echo "error: the reference LM $reference is not trained: bash scripts/ptb_results.sh $out" \
       "ptb_transformer_lm, or name a trained model=lm run with REFERENCE_LM=<run dir>" >&2; exit 1; }
suite() {  # label checkpoint [overrides ...]: the suite with the table's settings, logged per label
  local label=$1 checkpoint=$2; shift 2
  # iw_samples=0: the likelihood numbers are the run's own eval_test.json (K = 500)
  # shellcheck disable=SC2086
  python -m vae_text.evaluate checkpoint="$checkpoint" split=test iw_samples=0 reconstruct=false \
    generation=true gen.reference_lm="$reference" num_threads="${THREADS:-1}" progress=false "$@" \
    ${GEN_ARGS:-gen.samples=10000} >> "$out/generation_$label.log" 2>&1 ||
    { echo "error: $label failed: see $out/generation_$label.log" >&2; exit 1; }
}
dirs=()
for name in "${names[@]}"; do
  dir="$out/$name"
  [ -f "$dir/results.json" ] || {
    echo "error: $dir is not trained: bash scripts/ptb_results.sh $out $name" >&2; exit 1; }
  dirs+=("$dir")
  [ -f "$dir/eval_test_k0.json" ] || suite "$name" "$dir"
done
# the data's own row: the same metrics on real training sentences in place of samples
[ -f "$out/generation_data.json" ] || suite data "$reference" gen.source=data output="$out/generation_data.json"
python -m vae_text.report "${dirs[@]}" --out "$out/generation_report"
