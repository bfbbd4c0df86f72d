#!/usr/bin/env bash
# The paper's MiniLM recipe on one GPU, start to end inside a wall-clock budget (default 600 s), in one command:
#   bash scripts/remote/recipe.sh BUNDLE_DIR OUT_DIR
# BUNDLE_DIR from scripts/remote/pack.py. Stages: unpack; export-decls (also fills the data cache); BM25, usage and
# MePo on valid and test (in the background, on the CPU, while the GPU trains); train (batch 256, 3 negatives,
# lr 2e-4, cosine, 3 % warm-up, bf16, 2 epochs or until the deadline leaves just the reserves below) with its
# own final evaluation (the corpus embedded once, dense valid and test files); the fusion tuned on valid
# (`leanpremise fuse`, as `retrieve --hybrid bm25,mepo,usage --k 100` does on the same rankings); eval-files on test.
# OUT_DIR/$NAME.json (the one metrics JSON) is rewritten after every stage; every stage has a timeout.
# Settings (environment): BUDGET_S 600, EVAL_RESERVE_S (saving and the final evaluation) 90, POST_RESERVE_S
# (fusion and tables) 45, MARGIN_S 15, EPOCHS 2, BATCH 256, MINI_BATCH 512, NEGATIVES 3, LR 2e-4, WORKERS 4,
# EVAL_BATCH 512, PRECISION ("--bf16 True"; empty on CPU), MAX_SEQ_LENGTH (the model's own), DATA_NAME
# (mathlib-src: names the run and the JSON), PY, WORK, WHEELS (scripts/remote/setup.sh).
set -uo pipefail
START=$(date +%s.%N)
BUNDLE=$1 OUT=$2
BUDGET_S=${BUDGET_S:-600} EVAL_RESERVE_S=${EVAL_RESERVE_S:-90} POST_RESERVE_S=${POST_RESERVE_S:-45}
MARGIN_S=${MARGIN_S:-15} EPOCHS=${EPOCHS:-2} BATCH=${BATCH:-256} MINI_BATCH=${MINI_BATCH:-512}
NEGATIVES=${NEGATIVES:-3} LR=${LR:-2e-4} WORKERS=${WORKERS:-4} EVAL_BATCH=${EVAL_BATCH:-512}
PRECISION=${PRECISION---bf16 True} DATA_NAME=${DATA_NAME:-mathlib-src}
NAME=gpu_recipe_$DATA_NAME RUN=minilm-$DATA_NAME
# Pre-tokenising runs before the dataloader workers start: Rust parallelism gives it every core (train's own
# default keeps it off; recipe_train.py turns it off again once the trainer is built).
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-true}
source "$(dirname "$0")/setup.sh"
rm -f "$OUT/stages.tsv" "$OUT/train_progress.json" "$OUT/eval_files_test.json"
rm -rf "$WORK/run" "$WORK/rp" "$WORK/lex" "$WORK/fusein" "$WORK/fused"
mkdir -p "$WORK/rp" "$WORK/lex" "$WORK/fusein" "$WORK/fused"
DEADLINE=$("$PY" -c "print($START + $BUDGET_S)")
VERSIONS=$(tail -n 1 "$OUT/run.log")
TRAIN_FLAGS=(--data_dir "$WORK/data" --model_name_or_path "$WORK/model" --is_sentence_transformer True
  --per_device_train_batch_size "$BATCH" --mini_batch_size "$MINI_BATCH" --num_negatives_per_state "$NEGATIVES"
  --learning_rate "$LR" --lr_scheduler_type cosine --warmup_steps 0.03 $PRECISION --num_train_epochs "$EPOCHS"
  ${MAX_SEQ_LENGTH:+--max_seq_length "$MAX_SEQ_LENGTH"} --output_dir "$WORK/run" --save_strategy no
  --logging_steps 20 --dataloader_num_workers "$WORKERS" --retrieved_premises_dir "$WORK/rp"
  --eval_batch_size "$EVAL_BATCH" --evaluate_before False --run_name "$RUN" --report_to none)
COMMAND="BUDGET_S=$BUDGET_S bash scripts/remote/recipe.sh: leanpremise train ${TRAIN_FLAGS[*]} (time budget to the deadline)"

left() { "$PY" -c "print(max(int($DEADLINE - $1 - __import__('time').time()), 1))"; }  # seconds to DEADLINE-$1
report() {
  "$PY" scripts/remote/recipe_report.py "$OUT" "$WORK" "$NAME" --start "$START" --budget_s "$BUDGET_S" \
    --command "$COMMAND" --dense_name "$RUN" --versions "$VERSIONS" 2>>"$OUT/report.log" || log "report failed"
}
stage() {  # NAME TIMEOUT_S CMD...: run CMD under a timeout, log its status and seconds, rewrite the report
  local name=$1 limit=$2; shift 2
  local t0 rc; t0=$(date +%s.%N)
  log "$name (timeout ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$("$PY" -c "print(round($(date +%s.%N) - $t0, 2))")" >> "$OUT/stages.tsv"
  [ "$rc" = 0 ] || log "$name failed ($rc)"
  report
  return $rc
}

stage unpack "$(left $((POST_RESERVE_S + EVAL_RESERVE_S)))" "$PY" scripts/remote/unpack.py "$BUNDLE" "$WORK" \
  || { log "no data, no run"; exit 1; }
stage decls "$(left $((POST_RESERVE_S + EVAL_RESERVE_S)))" "$PY" -m leanpremise export-decls --data_dir "$WORK/data" \
  --split valid test --out_dir "$WORK/rp"
LEX_PIDS=()
for method in bm25 mepo usage; do
  for split in valid test; do
    stage "${method}_$split" "$(left $((POST_RESERVE_S + MARGIN_S)))" "$PY" -m leanpremise baseline "$method" \
      --data_dir "$WORK/data" --split "$split" --k 100 --out_dir "$WORK/lex" \
      --metrics_out "$OUT/${method}_${split}_metrics.json" &
    LEX_PIDS+=($!)
  done
done
TRAIN_UNTIL=$("$PY" -c "print($DEADLINE - $POST_RESERVE_S - $EVAL_RESERVE_S - $MARGIN_S)")
stage train "$(left "$POST_RESERVE_S")" "$PY" scripts/remote/recipe_train.py --train_until "$TRAIN_UNTIL" \
  --progress "$OUT/train_progress.json" -- "${TRAIN_FLAGS[@]}"
for pid in "${LEX_PIDS[@]}"; do wait "$pid"; done

# Fusion inputs at depth 100, as `retrieve --hybrid --k 100` ranks them (the dense files hold 1,024 premises).
FUSE_FILES=()
for split in valid test; do
  dense=$WORK/rp/dot_$split-$RUN.json
  [ -f "$dense" ] && "$PY" scripts/remote/recipe_report.py --truncate 100 "$dense" "$WORK/fusein/$(basename "$dense")"
  FUSE_FILES+=("$WORK/fusein/dot_$split-$RUN.json" "$WORK/lex/dot_$split-bm25.json" "$WORK"/lex/dot_"$split"-mepo-*.json
              "$WORK/lex/dot_$split-usage.json")
done
ALL_THERE=1
for f in "${FUSE_FILES[@]}"; do [ -f "$f" ] || { log "missing $f: no fusion"; ALL_THERE=; }; done
[ -n "$ALL_THERE" ] && stage fuse "$(left 10)" "$PY" -m leanpremise fuse --decls "$WORK/rp/valid_decls.json" \
  --out "$WORK/fused" "${FUSE_FILES[@]}"
TEST_FILES=()
for f in "$WORK/rp/dot_test-$RUN.json" "$WORK/lex/dot_test-bm25.json" "$WORK"/lex/dot_test-mepo-*.json \
  "$WORK/lex/dot_test-usage.json" "$WORK"/fused/dot_test-*.json; do [ -f "$f" ] && TEST_FILES+=("$f"); done
[ ${#TEST_FILES[@]} -gt 0 ] && stage eval_files "$(left 3)" "$PY" -m leanpremise eval-files "$WORK/rp/test_decls.json" \
  "${TEST_FILES[@]}" --k 16 32 100 --json "$OUT/eval_files_test.json"
cp "$WORK/fused/fusion.json" "$OUT/" 2>/dev/null
report
log "done in $("$PY" -c "print(round($(date +%s.%N) - $START, 1))") s of $BUDGET_S: $OUT/$NAME.json"
