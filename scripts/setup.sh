#!/usr/bin/env bash
# Create .venv and install leanpremise with every extra and its test tools, once; re-run when pyproject.toml
# changes.
# torch is pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build). To use a GPU, install
# the CUDA torch of your choice into .venv first; this script then leaves it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LEANPREMISE_VENV:-.venv}
stamp="$VENV/.leanpremise-setup"
want=$(sha256sum pyproject.toml | cut -c1-16)
# The Redis tests start a real redis-server on loopback; install Debian's package where we may (root + apt).
if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server (the shared-cache tests start one on loopback)..." >&2
  (apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }) \
    || echo "could not install redis-server: the Redis tests will be skipped" >&2
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $VENV (first run or pyproject.toml changed)..." >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >&2
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" >&2
fi
# Every extra (README.md, Install): the main job trains, the test suite runs every command.
"$VENV/bin/python" -m pip install -q -e ".[all,test]" >&2
echo "$want" > "$stamp"
