#!/usr/bin/env bash
# The converged PTB results table (results/ptb.md): every recipe trained with early
# stopping on validation and tested with IW-NLL K = 500, two runs at a time with one thread each
# (JOBS: how many; with a GPU, nvidia-smi found, JOBS runs share it side by side, default 4).
# Resumable: a run with results.json is skipped, one with checkpoints/last.pt is continued in place.
#   bash scripts/ptb_results.sh [out_dir] [name ...]     # names: a subset of the recipes below
#   ARGS="eval.iw_samples=0" bash scripts/ptb_results.sh outputs/gen ptb ...  # overrides for every run
set -u
out=${1:-outputs/ptb9}; shift || true
common=(train.num_threads=1 train.progress=false train.checkpoint_every=500)

declare -A recipe=(  # name -> experiment and overrides (budget: <= 2.5 h a run on 2 CPU cores)
  [ptb_lm]="+experiment=ptb_lm"
  [ptb_free_bits]="+experiment=ptb_free_bits"
  [ptb]="+experiment=ptb"
  [ptb_cyclical]="+experiment=ptb_cyclical"
  [ptb_bn]="+experiment=ptb_bn"
  [ptb_pretrain_fb]="+experiment=ptb_pretrain_fb"
  [ptb_ae]="+experiment=ptb_ae"
  [ptb_aggressive]="+experiment=ptb_aggressive remedy.aggressive_max_inner=20 remedy.aggressive_check_every=5 train.max_minutes=120"
  # ptb_large sizes (emb/LSTM 256, dropout 0.5): up to 40 epochs, early stopping 4, and a wall-time
  # budget so that training + the K = 500 test fit in about 2.5 h
  [ptb_large_lm]="+experiment=ptb_large model=lm train.max_minutes=120"
  [ptb_large_fb]="+experiment=ptb_large objective.free_bits=8 objective.free_bits_mode=dim train.max_minutes=110"
  [ptb_large_pretrain_fb]="+experiment=ptb_large objective.free_bits=8 objective.free_bits_mode=dim remedy.pretrain_epochs=4 train.max_minutes=100"
  # Transformer decoder (d_model 128, 2 blocks), at the LSTM rows' training wall time: a step is
  # 1/0.75 LSTM steps (1/0.71 for the LMs; docs/transformers.md), so 15 (14) epochs
  # stand for the LSTM rows' 20; the other ptb rules as they are
  [ptb_transformer]="+experiment=ptb_transformer train.epochs=15"
  [ptb_transformer_fb]="+experiment=ptb_transformer_fb train.epochs=15"
  [ptb_transformer_lm]="+experiment=ptb_transformer_lm train.epochs=14"
  # latent families at the seed sizes, the ptb rules
  [ptb_vmf]="+experiment=ptb_vmf"
  [ptb_vamp]="+experiment=ptb_vamp"
  [ptb_mog]="+experiment=ptb_mog"
  [ptb_iaf]="+experiment=ptb_iaf"
)
order=(ptb_lm ptb_free_bits ptb ptb_cyclical ptb_bn ptb_pretrain_fb ptb_ae ptb_aggressive ptb_large_lm
       ptb_large_fb ptb_large_pretrain_fb ptb_transformer ptb_transformer_fb ptb_transformer_lm
       ptb_vmf ptb_vamp ptb_mog ptb_iaf)
[ $# -gt 0 ] && order=("$@")

run() {  # name
  local name=$1 dir="$out/$1"
  [ -f "$dir/results.json" ] && return 0
  local resume=()
  [ -f "$dir/checkpoints/last.pt" ] && resume=(train.resume="$dir")
  # shellcheck disable=SC2086
  python -m vae_text.train ${recipe[$name]} ${ARGS:-} "${common[@]}" "${resume[@]}" hydra.run.dir="$dir" \
    >> "$out/$name.log" 2>&1 || echo "run $name failed: see $out/$name.log" >&2
}

mkdir -p "$out"
lanes=${JOBS:-2}
command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 && lanes=${JOBS:-4}
queue() { for name in "$@"; do run "$name"; done; }
for (( lane = 0; lane < lanes; lane++ )); do  # run i in lane i mod lanes, each lane one run at a time
  mine=()
  for i in "${!order[@]}"; do (( i % lanes == lane )) && mine+=("${order[$i]}"); done
  (( ${#mine[@]} )) && queue "${mine[@]}" &
done
wait
python -m vae_text.report "$out" --out "$out/report"
