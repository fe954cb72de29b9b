#!/usr/bin/env bash
# GPU SFT throughput / MFU of a random Qwen2.5-1.5B-shaped model with packed batches.
#   bash bench/gpu_sft.sh                 # full shape, bf16, needs a CUDA GPU
#   bash bench/gpu_sft.sh --dry-run       # tiny shape on CPU (checks the script runs)
# Extra arguments go to bench/gpu_sft.py (--steps, --budget, --median, --attn, --peak-tflops).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" -c "import importlib.util as u; print('flash_attn installed:', u.find_spec('flash_attn') is not None)"
exec "$PY" bench/gpu_sft.py "$@"
