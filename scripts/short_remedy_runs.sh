#!/usr/bin/env bash
# The short-budget comparison of the posterior-collapse remedies on PTB (results/remedies.md):
# every experiment at the seed sizes for 3 epochs (warm-ups shortened to 2 epochs so beta = 1 in
# the last one), IW-NLL with K = 20 on test, two runs at a time with one thread each. Aggressive
# training gets 300 outer steps with at most 20 inner steps each (about 3 epochs of compute).
#   bash scripts/short_remedy_runs.sh [out_dir]     # ~3 h on 2 CPU cores
set -u
out=${1:-outputs/remedies}
common=(train.epochs=3 train.early_stopping=null train.num_threads=1 train.progress=false
        eval.iw_samples=20 optim.plateau_factor=null)
warm=objective.schedule.warmup_steps=2630

run() {  # name, overrides...
  local name=$1; shift
  [ -f "$out/$name/results.json" ] && return 0
  local resume=()  # an interrupted run continues where it stopped
  [ -f "$out/$name/checkpoints/last.pt" ] && resume=(train.resume="$out/$name")
  python -m vae_text.train "${common[@]}" "$@" "${resume[@]}" hydra.run.dir="$out/$name" >> "$out/$name.log" 2>&1 \
    || echo "run $name failed: see $out/$name.log" >&2
}

mkdir -p "$out"
(
  run plain_vae   +experiment=ptb objective/schedule=constant
  run annealing   +experiment=ptb $warm
  run cyclical    +experiment=ptb_cyclical ++objective.schedule.cycle_steps=1315 objective.schedule.cycles=3
  run free_bits   +experiment=ptb_free_bits $warm
  run lm          +experiment=ptb_lm
) &
(
  run bn_vae      +experiment=ptb_bn
  run pretrain_fb +experiment=ptb_pretrain_fb remedy.pretrain_epochs=1 train.epochs=2 objective.schedule.warmup_steps=1315
  run ae          +experiment=ptb_ae
  run word_drop   +experiment=ptb model.word_dropout=0.4 $warm
  run aggressive  +experiment=ptb_aggressive objective.schedule.warmup_steps=200 train.max_steps=300 \
                  remedy.aggressive_max_inner=20 remedy.aggressive_check_every=5
) &
wait
(  # about 45 minutes: ~13 encoder steps per decoder step
  run aggressive_1epoch +experiment=ptb_aggressive train.epochs=1 objective.schedule.warmup_steps=1000 \
                  remedy.aggressive_max_inner=20 remedy.aggressive_check_every=5
) &
(  # the annealing recipe on sentencepiece subwords
  run sentencepiece +experiment=ptb_sentencepiece objective.schedule.warmup_steps=2630
) &
wait
(  # the objectives beyond the ELBO (docs/objectives.md) in their papers' form, without annealing;
   # capacity's C rises to C_max over the same 2 epochs as the warm-ups above
  run mdr       +experiment=ptb objective=mdr objective/schedule=constant
  run capacity  +experiment=ptb objective=capacity objective/schedule=constant objective.args.steps=2630
  run infovae   +experiment=ptb objective=infovae objective/schedule=constant
) &
(  # the importance-weighted bound trains on K draws a sentence: K times the decoder's work
  run iwae_k2   +experiment=ptb objective=iwae objective/schedule=constant objective.args.samples=2
  run iwae_k5   +experiment=ptb objective=iwae objective/schedule=constant
) &
wait
python -m vae_text.report "$out" --out "$out/report"
