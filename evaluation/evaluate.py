"""Evaluation by the R1 protocol: `evaluate_models({"student": dir, "base": dir}, cfg, seed)`.

Each model answers every benchmark question n times (vLLM through Ray Data LLM, one engine per
model), answers are parsed and scored with math-verify, and each (model, benchmark) gets pass@1
averaged over the n samples with a 95% interval, and cons@n (distill.evaluation.metrics.summarise).
"""
from __future__ import annotations

from typing import Callable

import pandas as pd
from distill.engines.sampling import SamplingConfig
from distill.pipeline.keys import RUNTIME, fingerprint
from pydantic import BaseModel, ConfigDict, Field


class BenchmarkSpec(BaseModel):
    """One evaluation set: a bundled name or a user file, and how many samples per question."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name in the results table.")
    source: str = Field(description="`bundled:NAME` (math500, aime24, amc23, gsm8k_test, ...) or a file.", json_schema_extra=fingerprint("prompt_source"))
    problem_column: str = Field("problem", description="Column with the question.")
    answer_column: str = Field("answer", description="Column with the reference answer.")
    limit: int | None = Field(None, ge=1, description="Use the first N questions only.")
    n_samples: int | None = Field(None, ge=1, description="Samples per question; null: evaluate.n_samples.")


def r1_sampling() -> SamplingConfig:
    """The R1 paper's evaluation sampling: 32,768 new tokens, temperature 0.6, top-p 0.95."""
    return SamplingConfig(n=1, temperature=0.6, top_p=0.95, max_tokens=32768)


class EvalConfig(BaseModel):
    """How students (and their base model, for comparison) are evaluated."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Run the evaluate stage.")
    benchmarks: list[BenchmarkSpec] = Field(default_factory=list, description="Sets to evaluate on.")
    n_samples: int = Field(4, ge=1, description="Samples per question for pass@1 (R1: 64 for AIME, 4-16 others).")
    sampling: SamplingConfig = Field(default_factory=r1_sampling, description="Sampling (n is ignored).")
    template: str = Field("r1_math", description="Prompt template (teachers.templates).")
    compare_base: bool = Field(True, description="Also evaluate the student's base model.")
    engine: dict = Field(default_factory=dict, description="vLLM engine arguments for evaluation.", json_schema_extra=fingerprint("engine_args"))
    batch_size: int = Field(32, ge=1, description="Rows per engine batch.", json_schema_extra=RUNTIME)
    concurrency: int = Field(1, ge=1, description="Engine replicas per model.", json_schema_extra=RUNTIME)


def benchmark_requests(cfg: EvalConfig, base_dir=None) -> pd.DataFrame:
    """One row per (benchmark, question, sample) with the user message."""
    from distill.data.prompts import check_columns, read_table
    from distill.teachers.templates import build_messages

    frames = []
    for spec in cfg.benchmarks:
        table = read_table(spec.source, field=f"evaluate.benchmarks[{spec.name}].source", base_dir=base_dir)
        check_columns(table, {"problem_column": spec.problem_column, "answer_column": spec.answer_column},
                      spec.source)
        if spec.limit:
            table = table.head(spec.limit)
        n = spec.n_samples or cfg.n_samples
        qids = table["id"].astype(str) if "id" in table else pd.Series(range(len(table))).astype(str)
        base = pd.DataFrame({"benchmark": spec.name, "question_id": qids.to_numpy(),
                             "problem": table[spec.problem_column].astype(str).to_numpy(),
                             "reference": table[spec.answer_column].astype(str).to_numpy()})
        rep = base.loc[base.index.repeat(n)].reset_index(drop=True)
        rep["sample_idx"] = rep.groupby("question_id").cumcount()
        frames.append(rep)
    out = pd.concat(frames, ignore_index=True)
    out["messages"] = [build_messages(p, cfg.template, None) for p in out["problem"]]
    out["request_id"] = out["benchmark"] + ":" + out["question_id"] + ":" + out["sample_idx"].astype(str)
    return out


def generate_answers(model_dir: str, requests: pd.DataFrame, cfg: EvalConfig, seed: int,
                     progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Sample each request once from `model_dir` (its own chat template) and return the rows."""
    from distill.engines.vllm import EngineSpec, VLLMGenerator, render_prompts

    prompts = render_prompts(model_dir, list(requests["messages"]))
    spec = EngineSpec(model=model_dir, sampling=cfg.sampling, seed=seed, engine=cfg.engine,
                      batch_size=cfg.batch_size, concurrency=cfg.concurrency)
    frame = pd.DataFrame({"request_id": requests["request_id"].to_numpy(), "prompt": prompts})
    outs = []
    for out in VLLMGenerator(spec).generate(frame):
        outs.append(out)
        if progress:
            progress(sum(len(o) for o in outs))
    results = pd.concat(outs, ignore_index=True) if outs else pd.DataFrame(columns=["request_id", "text"])
    return requests.drop(columns=["messages"]).merge(results, on="request_id", how="left")


def score(rows: pd.DataFrame, timeout_s: float = 5.0) -> pd.DataFrame:
    """Add parsed answers and `correct` (math-verify) to answer rows."""
    from distill.data.parsing import parse_frame
    from distill.data.verify import verify_math

    rows = parse_frame(rows.assign(text=rows["text"].fillna("")), text_column="text", think_required=False)
    # The boxed / "Final answer" part where there is one, else the whole answer (math-verify takes
    # its last expression); a truncated reasoning has no answer part and scores wrong.
    answers = [f if f is not None and not pd.isna(f) else a for f, a in zip(rows["final_answer"], rows["answer_text"])]
    pairs = list(zip(rows["reference"], answers))
    rows["correct"] = [bool(v) for v in verify_math(pairs, timeout_s=timeout_s)]
    return rows


def evaluate_models(models: dict[str, str], cfg: EvalConfig, seed: int, *, base_dir=None,
                    progress: Callable[[str, int, int | None], None] | None = None
                    ) -> tuple[pd.DataFrame, dict]:
    """Answer rows for every model, and results[model][benchmark] = summarise(...)."""
    from distill.evaluation.metrics import summarise

    requests = benchmark_requests(cfg, base_dir)
    all_rows, results = [], {}
    for label, model_dir in models.items():
        report = (lambda done, label=label: progress(f"{label} answers", done, len(requests))) if progress else None
        rows = score(generate_answers(model_dir, requests, cfg, seed, report))
        rows.insert(0, "model", label)
        all_rows.append(rows)
        results[label] = {b: summarise(g) for b, g in rows.groupby("benchmark")}
    return pd.concat(all_rows, ignore_index=True), results
