#!/usr/bin/env bash
# On a GPU machine: train MiniLM on a bundle made by scripts/remote/pack.py and report test Recall@k
# before and after training. Usage (from the repo root): bash scripts/remote/gpu_run.sh BUNDLE_DIR OUT_DIR [MINUTES]
# Wheels in $WHEELS (default .whl/, if any) are installed into /tmp/site first (the machine may have no package index).
set -uo pipefail
BUNDLE=$1 OUT=$2 MINUTES=${3:-3.5}
WORK=${WORK:-/tmp/lp-work}
mkdir -p "$OUT" "$WORK"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/run.log"; }
WHEELS=${WHEELS:-.whl}
if [ -z "${SKIP_WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false} LEANPREMISE_CACHE_DIR=$WORK/cache
nvidia-smi -L 2>&1 | tee -a "$OUT/run.log"
python3 -c "import torch, transformers, sentence_transformers as st, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'st', st.__version__, 'datasets', datasets.__version__)" 2>&1 | tee -a "$OUT/run.log"
log "unpack"
python3 scripts/remote/unpack.py "$BUNDLE" "$WORK" > "$OUT/unpack.log" 2>&1 || { log "unpack failed"; exit 1; }
log "untrained MiniLM on test"
[ -n "${SKIP_UNTRAINED:-}" ] || timeout 150 python3 -m leanpremise retrieve --model "$WORK/model" --model_name all-MiniLM-L6-v2 --data_dir "$WORK/data" \
  --split test --out_dir "$WORK/rp" --metrics_out "$OUT/untrained_test_metrics.json" --batch_size 512 \
  > "$OUT/untrained.log" 2>&1 || log "untrained retrieve failed ($?)"
log "train ${MINUTES} min"
# Training budget plus loading, pre-tokenising (~130 s for mathlib-src on 16 cores) and the final evaluation
# (~70 s to encode the corpus on an H200): 420 s in all cut a 4-minute run's evaluation short.
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-$(python3 -c "print(int(float('$MINUTES') * 60 + 330))")}
timeout "$TRAIN_TIMEOUT" python3 -m leanpremise train --data_dir "$WORK/data" --model_name_or_path "$WORK/model" \
  --is_sentence_transformer True --per_device_train_batch_size 256 --mini_batch_size 128 \
  --num_negatives_per_state 3 --learning_rate 2e-4 --lr_scheduler_type cosine --warmup_ratio 0.03 ${PRECISION---bf16 True} \
  --num_train_epochs 1 --max_train_minutes "$MINUTES" --output_dir "$WORK/run" --save_strategy no \
  --logging_steps 20 --dataloader_num_workers 4 --retrieved_premises_dir "$WORK/rp" --eval_batch_size 512 \
  --evaluate_before False --run_name minilm-mathlib-src --report_to none > "$OUT/train.log" 2>&1 || log "train failed ($?)"
cp "$WORK"/run/*.json "$OUT/" 2>/dev/null
for f in "$WORK"/rp/dot_test-*.json; do [ -f "$f" ] && gzip -c "$f" > "$OUT/$(basename "$f").gz"; done
log "done"
