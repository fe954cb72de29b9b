"""Evaluation by the R1 protocol: `evaluate_models({"student": dir, "base": dir}, cfg, seed)`.

Each model answers every benchmark question n times (vLLM through Ray Data LLM, one engine per
model) under the same rules (evaluation.protocol: chat template and its pre-fill, stop tokens,
answer parsing), answers are scored with math-verify, and each (model, benchmark) gets pass@1
averaged over the n samples with a 95% interval and cons@n (evaluation.metrics.summarise,
evaluation.consensus); the student is compared with its base on the same questions
(evaluation.metrics.compare_models). The summary holds `results[model][benchmark]`, `paired`
and `protocol` (the rules used, in words).
"""
from __future__ import annotations

from typing import Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.engines.sampling import SamplingConfig
from distill.pipeline.keys import RUNTIME, fingerprint


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
    compare_sft: bool = Field(True, description="With on-policy distillation on: also evaluate "
                              "the SFT-only student (paired against it).")
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
                     progress: Callable[[int], None] | None = None) -> tuple[pd.DataFrame, dict]:
    """Sample each request once from `model_dir` under evaluation.protocol's rules: the answer
    rows (with each prompt's `prefill`) and the rules used (protocol.render)."""
    from distill.engines.vllm import EngineSpec, VLLMGenerator
    from distill.evaluation.protocol import prefill_of, render

    prompts, rules = render(model_dir, list(requests["messages"]))
    sampling = cfg.sampling.model_copy(update={"stop": [*cfg.sampling.stop, *rules["stop_strings"]]})
    spec = EngineSpec(model=model_dir, sampling=sampling, seed=seed, engine=cfg.engine,
                      batch_size=cfg.batch_size, concurrency=cfg.concurrency,
                      stop_token_ids=rules["stop_token_ids"])
    frame = pd.DataFrame({"request_id": requests["request_id"].to_numpy(), "prompt": prompts})
    outs = []
    for out in VLLMGenerator(spec).generate(frame, block_rows=cfg.batch_size):  # answers as done
        outs.append(out)
        if progress:
            progress(sum(len(o) for o in outs))
    results = pd.concat(outs, ignore_index=True) if outs else pd.DataFrame(columns=["request_id", "text"])
    rows = requests.drop(columns=["messages"]).assign(prefill=[prefill_of(p) for p in prompts])
    return rows.merge(results, on="request_id", how="left"), rules


def score(rows: pd.DataFrame, *, timeout_s: float = 5.0, workers: int = 0) -> pd.DataFrame:
    """Answer rows (text, prefill, finish_reason, reference) with the protocol's answers
    (protocol.find_answers), `correct` (math-verify; no answer or undecided = False) and
    `answer_group` (math-verify-equivalent answers of a question share it; for cons@n)."""
    from distill.data.verify import verify_math
    from distill.evaluation.consensus import answer_groups
    from distill.evaluation.protocol import as_answer, find_answers

    rows = find_answers(rows)
    answers = [as_answer(a, t) for a, t in zip(rows["answer"], rows["answer_is_text"])]
    verdicts = verify_math(list(zip(rows["reference"], answers)), timeout_s=timeout_s,
                           workers=workers)
    rows["correct"] = [v is True for v in verdicts]
    rows["answer_group"] = answer_groups(rows, timeout_s=timeout_s, workers=workers)
    return rows


def protocol_summary(rules: dict[str, dict]) -> dict:
    """The rules behind the numbers, in words, for the results (`rules`: per model, render's)."""
    from distill.evaluation.consensus import TIE_RULE
    from distill.evaluation.metrics import INTERVAL, PAIRED
    from distill.evaluation.protocol import PARSING

    return {"parsing": PARSING, "cons": TIE_RULE, "interval": INTERVAL, "paired": PAIRED,
            "models": rules}


def evaluate_models(models: dict[str, str], cfg: EvalConfig, seed: int, *, base_dir=None,
                    progress: Callable[[str, int, int | None], None] | None = None
                    ) -> tuple[pd.DataFrame, dict]:
    """Answer rows for every model, and the summary: results[model][benchmark] = summarise(...),
    paired[benchmark] = student minus base, paired_sft[benchmark] = student minus sft (each when
    both ran), protocol = the rules used."""
    from distill.evaluation.metrics import compare_models, summarise

    requests = benchmark_requests(cfg, base_dir)
    all_rows, results, rules = [], {}, {}
    for label, model_dir in models.items():
        report = (lambda done, label=label: progress(f"{label} answers", done, len(requests))) if progress else None
        rows, rules[label] = generate_answers(model_dir, requests, cfg, seed, report)
        rows = score(rows)
        rows.insert(0, "model", label)
        all_rows.append(rows)
        results[label] = {b: summarise(g) for b, g in rows.groupby("benchmark")}
    rows = pd.concat(all_rows, ignore_index=True)
    return rows, {"results": results, "paired": compare_models(rows, "student", "base"),
                  "paired_sft": compare_models(rows, "student", "sft"),
                  "protocol": protocol_summary(rules)}
