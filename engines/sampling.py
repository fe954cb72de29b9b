"""Sampling parameters shared by every engine (vLLM, OpenAI-compatible HTTP, evaluation), and
`request_seed(seed, request_id)`: the seed each request samples with where the engine takes one."""
from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field


class SamplingConfig(BaseModel):
    """Sampling parameters (vLLM / OpenAI names). k samples per prompt = `n`."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(1, ge=1, description="Samples per prompt (k). Each is its own row and resume unit.")
    temperature: float = Field(0.6, ge=0, description="R1 uses 0.6.")
    top_p: float = Field(0.95, gt=0, le=1, description="R1 uses 0.95.")
    max_tokens: int = Field(32768, ge=1, description="Most new tokens per sample (R1: 32,768).")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")


def request_seed(seed: int, request_id: str) -> int:
    """A stable 31-bit seed per (recipe seed, request): a sample then depends on its own request
    only, not on the batch or the order it was scheduled in."""
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF
