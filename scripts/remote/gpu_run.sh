#!/usr/bin/env bash
# On a GPU machine: train MiniLM on a bundle made by scripts/remote/pack.py and report test Recall@k
# before and after training. Usage (from the repo root): bash scripts/remote/gpu_run.sh BUNDLE_DIR OUT_DIR [MINUTES]
# Environment and unpacking: scripts/remote/setup.sh. The whole recipe in one command: scripts/remote/recipe.sh.
set -uo pipefail
BUNDLE=$1 OUT=$2 MINUTES=${3:-3.5}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
source "$(dirname "$0")/setup.sh"
log "unpack"
unpack_bundle "$BUNDLE" || { log "unpack failed"; exit 1; }
log "untrained MiniLM on test"
[ -n "${SKIP_UNTRAINED:-}" ] || timeout 150 "$PY" -m leanpremise retrieve --model "$WORK/model" --model_name all-MiniLM-L6-v2 --data_dir "$WORK/data" \
  --split test --out_dir "$WORK/rp" --metrics_out "$OUT/untrained_test_metrics.json" --batch_size 512 \
  > "$OUT/untrained.log" 2>&1 || log "untrained retrieve failed ($?)"
log "train ${MINUTES} min"
# Training budget plus loading, pre-tokenising (~130 s for mathlib-src on 16 cores) and the final evaluation
# (~70 s to encode the corpus on an H200): 420 s in all cut a 4-minute run's evaluation short.
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-$("$PY" -c "print(int(float('$MINUTES') * 60 + 330))")}
timeout "$TRAIN_TIMEOUT" "$PY" -m leanpremise train --data_dir "$WORK/data" --model_name_or_path "$WORK/model" \
  --is_sentence_transformer True --per_device_train_batch_size 256 --mini_batch_size 128 \
  --num_negatives_per_state 3 --learning_rate 2e-4 --lr_scheduler_type cosine --warmup_ratio 0.03 ${PRECISION---bf16 True} \
  --num_train_epochs 1 --max_train_minutes "$MINUTES" --output_dir "$WORK/run" --save_strategy no \
  --logging_steps 20 --dataloader_num_workers 4 --retrieved_premises_dir "$WORK/rp" --eval_batch_size 512 \
  --evaluate_before False --run_name minilm-mathlib-src --report_to none > "$OUT/train.log" 2>&1 || log "train failed ($?)"
cp "$WORK"/run/*.json "$OUT/" 2>/dev/null
for f in "$WORK"/rp/dot_test-*.json; do [ -f "$f" ] && gzip -c "$f" > "$OUT/$(basename "$f").gz"; done
log "done"
