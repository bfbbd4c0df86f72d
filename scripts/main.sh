#!/usr/bin/env bash
# The main job on the embedded default: train the packaged all-MiniLM-L6-v2 on the shipped sample, on CPU,
# printing valid Recall@{8,16,32} before and after. Extra arguments go to `leanpremise train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/leanpremise train "$@"
