"""Token-level vLLM work for on-policy distillation, through Ray Data LLM (engines.vllm.EngineSpec):

    sample_tokens(spec, frame)          # rows: request_id, token_ids (the prompt)
        -> request_id, completion_ids, completion_logprobs (the sampler's log-prob of each token)
    score_tokens(spec, frame, top_k)    # rows: request_id, token_ids, start (the answer's first)
        -> request_id, token_logprobs, topk_ids, topk_logprobs (one entry per answer token)

Prompts go in as token ids (`tokenized_prompt`), so the teacher reads exactly the student's
tokens. Scoring is vLLM's prompt log-probs: one new token (`max_tokens: 1`) and
`prompt_logprobs: top_k`, which returns, at every prompt position, the log-prob of the token
there and the `top_k` most likely tokens; only positions from `start` on are kept. vLLM reports
raw model log-probs (before temperature). A request that fails raises a DistillError naming it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from distill.engines.vllm import EngineSpec
from distill.pipeline.cluster import light_task_args


def sample_params(spec: EngineSpec, request_id: str) -> dict[str, Any]:
    """One sampling request: the spec's sampling (and, on GPU, its per-request seed) plus the
    log-prob of each sampled token."""
    return {**spec.request_params(request_id), "logprobs": 0}


def score_params(top_k: int) -> dict[str, Any]:
    """One scoring request: prompt log-probs with the top `top_k` tokens, one generated token."""
    return {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": top_k, "detokenize": False}


def _entries(logprobs: list | None) -> list[dict]:
    """vLLM's per-position {token_id: {logprob, rank, ...}} as plain dicts keyed by int."""
    return [{int(k): v for k, v in (d or {}).items() if v is not None} for d in (logprobs or [])]


def answer_scores(prompt_logprobs: list | None, token_ids: list[int], start: int,
                  top_k: int) -> dict[str, list]:
    """From one scoring output: the log-prob of each answer token and each position's top-k."""
    out: dict[str, list] = {"token_logprobs": [], "topk_ids": [], "topk_logprobs": []}
    entries = _entries(prompt_logprobs)
    for pos in range(start, len(token_ids)):
        entry = entries[pos] if pos < len(entries) else {}
        tok = int(token_ids[pos])
        out["token_logprobs"].append(float(entry[tok]["logprob"]) if tok in entry else float("nan"))
        ranked = sorted((v.get("rank") or 10**9, k, float(v["logprob"])) for k, v in entry.items())
        ranked = [r for r in ranked if r[0] <= top_k][:top_k]
        out["topk_ids"].append([k for _, k, _ in ranked])
        out["topk_logprobs"].append([lp for _, _, lp in ranked])
    return out


def _run(spec: EngineSpec, frame: pd.DataFrame, params, post) -> Iterator[pd.DataFrame]:
    import ray
    from ray.data.llm import build_processor

    def pre(row: dict) -> dict:
        return {"distill_key": row["request_id"], "tokenized_prompt": list(row["token_ids"]),
                "start": int(row.get("start", 0)), "sampling_params": params(row["request_id"])}

    def post_row(row: dict) -> dict:
        error = row.get("__inference_error__") or None
        return {"request_id": row["distill_key"], "error": str(error) if error else None,
                **({} if error else post(row))}

    processor = build_processor(spec.processor_config(), preprocess=pre, postprocess=post_row,
                                preprocess_map_kwargs=light_task_args(),
                                postprocess_map_kwargs=light_task_args())
    cols = ["request_id", "token_ids"] + (["start"] if "start" in frame else [])
    if frame.empty:
        return
    ds = processor(ray.data.from_pandas([frame[cols]]))
    yield from ds.iter_batches(batch_format="pandas", batch_size=None)


def sample_tokens(spec: EngineSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Sample one answer per row from `spec.model` (see the module docstring)."""
    def post(row: dict) -> dict:
        ids = [int(t) for t in row.get("generated_tokens") or []]
        entries = _entries(row.get("logprobs"))
        lps = [e.get(t, {}).get("logprob", float("nan")) for t, e in zip(ids, entries)]
        return {"completion_ids": ids, "completion_logprobs": [float(x) for x in lps]}

    return _collect(_run(spec, frame, lambda rid: sample_params(spec, rid), post),
                    ["completion_ids", "completion_logprobs"])


def score_tokens(spec: EngineSpec, frame: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """The teacher's log-probs of every answer token, and its top_k at each (module docstring)."""
    def post(row: dict) -> dict:
        ids = [int(t) for t in row.get("prompt_token_ids") or []]
        return answer_scores(row.get("prompt_logprobs"), ids, int(row["start"]), top_k)

    return _collect(_run(spec, frame, lambda rid: score_params(top_k), post),
                    ["token_logprobs", "topk_ids", "topk_logprobs"])


def _collect(parts: Iterator[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """One frame of request_id, error and `columns`; a failed request (Ray Data LLM passes its
    raw row on, with `__inference_error__`) raises a DistillError naming it."""
    from distill.pipeline.errors import DistillError

    frames = list(parts)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for col in ("request_id", "error", *columns):
        if col not in out:
            out[col] = None
    if "distill_key" in out:  # failed rows keep our id in distill_key
        out["request_id"] = out["request_id"].fillna(out["distill_key"])
    if "__inference_error__" in out:
        out["error"] = out["error"].fillna(out["__inference_error__"].replace("", None))
    failed = out[out["error"].notna()]
    if len(failed):
        raise DistillError(f"vLLM failed {len(failed)} of {len(out)} requests (e.g. "
                           f"{failed['request_id'].iloc[0]}: {str(failed['error'].iloc[0])[:300]})",
                           fix="check max_model_len in onpolicy.student_engine / teacher_engine "
                               "against prompt + max_new_tokens, and the engine's log")
    return out[["request_id", "error", *columns]]
