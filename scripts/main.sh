#!/usr/bin/env bash
# The main job on the embedded default: on the shipped sample, on CPU, train a static encoder (token vectors
# initialised from the packaged all-MiniLM-L6-v2), then a reranker over it, BM25, MePo and usage; print test
# Recall@{8,16,32,100} of each stage (dense before, dense after, reranked) beside BM25 (valid only stops and
# tunes). Extra arguments go to `leanpremise train`; `--encoder transformer` trains MiniLM itself instead
# (the earlier recipe: 5 minutes of CPU training).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/leanpremise train --encoder static "$@"
