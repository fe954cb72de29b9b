"""Teacher backends (vLLM through Ray Data LLM, OpenAI-compatible HTTP) and prompt templates."""
