"""Sampling parameters shared by every engine (vLLM, OpenAI-compatible HTTP, evaluation)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SamplingConfig(BaseModel):
    """Sampling parameters (vLLM / OpenAI names). k samples per prompt = `n`."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(1, ge=1, description="Samples per prompt (k). Each is its own row and resume unit.")
    temperature: float = Field(0.6, ge=0, description="R1 uses 0.6.")
    top_p: float = Field(0.95, gt=0, le=1, description="R1 uses 0.95.")
    max_tokens: int = Field(32768, ge=1, description="Most new tokens per sample (R1: 32,768).")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")
