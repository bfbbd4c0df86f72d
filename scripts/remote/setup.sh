# Sourced by gpu_run.sh and recipe.sh on a GPU machine (no package index): the Python environment, the run log,
# what the machine is, and the bundle unpacked. Needs OUT (results dir); sets WORK, PY, PYTHONPATH, log().
# Wheels in $WHEELS (default .whl/, if any) are installed into /tmp/site first; SKIP_WHEELS=1 skips them.
WORK=${WORK:-/tmp/lp-work}
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/run.log"; }
WHEELS=${WHEELS:-.whl}
if [ -z "${SKIP_WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export HF_HUB_OFFLINE=1 LEANPREMISE_CACHE_DIR=${LEANPREMISE_CACHE_DIR:-$WORK/cache}
nvidia-smi -L 2>&1 | tee -a "$OUT/run.log"
"$PY" -c "import torch, transformers, sentence_transformers as st, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'st', st.__version__, 'datasets', datasets.__version__)" 2>&1 | tee -a "$OUT/run.log"

unpack_bundle() {  # BUNDLE -> $WORK/data, $WORK/model
  "$PY" scripts/remote/unpack.py "$1" "$WORK" > "$OUT/unpack.log" 2>&1
}
