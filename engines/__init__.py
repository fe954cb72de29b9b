"""Model engines and sources shared by teachers and evaluation: vLLM through Ray Data LLM
(`distill.engines.vllm`), model sources by short name (`distill.engines.models`), tiny test models."""
