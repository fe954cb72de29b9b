"""Model and dataset cards: `model_card(lineage, names) -> str`, `dataset_card(...) -> str`.

Both are README.md texts built with huggingface_hub's ModelCard / DatasetCard, so the YAML header
is the Hub's metadata (base_model as a hub id, datasets, license, tags, model-index with the
evaluation; configs for the dataset's splits). The bodies give the lineage (workflows.lineage):
teacher and sampling, prompt sources, the funnel by reason, the curation rules, training settings,
the evaluation with its protocol, the paired comparison with the base and its verdict, intended
use and limits, and how to load and prompt the student.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

TAGS = ["distill", "distillation", "reasoning"]
COLUMN_DOCS = {
    "row_id": "request id: prompt id and sample index",
    "prompt_id": "id of the prompt (a hash of the problem unless the prompt set has ids)",
    "prompt": "the user message the student was trained on (the problem in the teacher's template)",
    "reasoning": "the teacher's chain of thought",
    "answer_text": "the teacher's answer after its reasoning",
    "reference": "the prompt set's reference answer",
    "final_answer": "the answer extracted from answer_text",
    "completion_tokens": "tokens the teacher generated for this sample",
    "teacher": "the teacher model",
    "messages": "the example as chat messages (user, assistant), as trained",
    "stage": "the stage that rejected the row",
    "reject_reason": "why the row was rejected",
}


@dataclass(frozen=True)
class CardNames:
    """Where the cards point: the model and dataset repos, licenses, what was published."""

    model_repo: str
    dataset_repo: str
    license: str
    dataset_license: str
    adapter_only: bool = False
    example_prompt: str = "What is 12 + 30?"


def _yaml_list(items: list[str]) -> list[str]:
    return [i for i in items if i]


def eval_results(lineage: dict) -> list:
    """The student's results as model-index entries (pass@1 and cons@n per benchmark)."""
    from huggingface_hub import EvalResult

    out = []
    for bench, r in (lineage.get("eval") or {}).get("student", {}).items():
        for metric in ("pass@1", *[k for k in r if k.startswith("cons@")]):
            out.append(EvalResult(task_type="text-generation", dataset_type=bench,
                                  dataset_name=bench, metric_type=metric,
                                  metric_value=round(float(r[metric]), 4),
                                  metric_name=f"{metric} ({r['questions']} questions x "
                                              f"{r['samples_per_question']} samples)"))
    return out


def _usage(lineage: dict, names: CardNames) -> list[str]:
    s = lineage.get("eval_settings", {}).get("sampling") or lineage.get("sampling") or {}
    sampling = (f"temperature={s.get('temperature', 0.6)}, top_p={s.get('top_p', 0.95)}, "
                f"max_tokens={s.get('max_tokens', 512)}")
    message = json.dumps([{"role": "user", "content": names.example_prompt}])
    base = lineage.get("student_base_hub_id") or lineage.get("student_base")
    r1 = lineage.get("training", {}).get("think_format") == "r1"
    if names.adapter_only:
        load = ["from peft import PeftModel",
                "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'base = AutoModelForCausalLM.from_pretrained("{base}")',
                f'model = PeftModel.from_pretrained(base, "{names.model_repo}")',
                f'tok = AutoTokenizer.from_pretrained("{names.model_repo}")']
    else:
        load = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'tok = AutoTokenizer.from_pretrained("{names.model_repo}")',
                f'model = AutoModelForCausalLM.from_pretrained("{names.model_repo}")']
    lines = ["## How to use", "",
             "Send the problem as one user message, worded as in training, with no system prompt "
             "(the chat template ships with the model"
             + (" and pre-fills `<think>\\n`" if r1 else "") + "). For example:", "",
             "```text", names.example_prompt, "```", "",
             "```python", *load, "",
             f"messages = {message}",
             "inputs = tok.apply_chat_template(messages, add_generation_prompt=True, "
             "return_tensors=\"pt\", return_dict=True)",
             "out = model.generate(**inputs, do_sample=True, "
             f"temperature={s.get('temperature', 0.6)}, top_p={s.get('top_p', 0.95)}, "
             f"max_new_tokens={s.get('max_tokens', 512)})",
             'print(tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
             "```", ""]
    if not names.adapter_only:
        lines += ["With vLLM:", "", "```python", "from vllm import LLM, SamplingParams", "",
                  f'llm = LLM("{names.model_repo}")',
                  f"print(llm.chat({message}, SamplingParams({sampling}))[0].outputs[0].text)",
                  "```", ""]
    return lines


def funnel_table(lineage: dict) -> list[str]:
    """The funnel as a markdown table: rows in, kept and rejected by reason per stage."""
    rows = ["| stage | in | kept | rejected (by reason) |", "|---|---|---|---|"]
    for f in lineage.get("funnel", []):
        reasons = ", ".join(f"{r} {n:,}" for r, n in f["rejected"].items()) or "none"
        rows.append(f"| {f['stage']} | {f['rows_in']:,} | {f['kept']:,} | {reasons} |")
    return rows


def _data_section(lineage: dict, names: CardNames) -> list[str]:
    t, p = lineage.get("teacher_settings", {}), lineage.get("prompts", {})
    s = t.get("sampling") or lineage.get("sampling") or {}
    teacher = lineage.get("teacher_hub_id") or lineage.get("teacher")
    few = (f", {t['few_shot']} worked examples shown to the teacher only"
           if t.get("few_shot") else "")
    return ["## Training data", "",
            f"- Teacher: **{teacher}** ({t.get('backend', 'vllm')}), template "
            f"`{t.get('template')}`, system prompt: {t.get('system_prompt') or 'none'}{few}.",
            f"- Sampling: {s.get('n')} samples per prompt, temperature {s.get('temperature')}, "
            f"top-p {s.get('top_p')}, at most {s.get('max_tokens')} new tokens.",
            f"- Prompts: `{p.get('source')}`" + (f", first {p['limit']}" if p.get("limit") else "")
            + (f" ({p['count']:,} prompts)" if p.get("count") is not None else "") + ".",
            f"- The curated set: [{names.dataset_repo}](/datasets/{names.dataset_repo}) "
            "(its card lists the rules and thresholds, and the rejected rows are its `rejected` "
            "config).",
            "", "Every teacher sample is accounted for: kept, or rejected with a reason.", "",
            *funnel_table(lineage), ""]


def _training_section(lineage: dict) -> list[str]:
    t = dict(lineage.get("training") or {})
    if not t:
        return []
    shown = {k: v for k, v in t.items() if k not in ("loss_history",) and v is not None}
    loss = f"final training loss {t['final_loss']:.3f} after {t['steps']} steps" \
        if t.get("final_loss") is not None else "no loss logged"
    return ["## Training", "",
            f"Supervised fine-tuning only ({lineage.get('method')}), no RL, on the curated traces; "
            f"{loss}.", "", "```json", json.dumps(shown, indent=1, sort_keys=True), "```", ""]


def _evaluation_section(lineage: dict) -> list[str]:
    from distill.evaluation.tables import markdown, verdicts

    if not lineage.get("eval"):
        return ["## Evaluation", "", "Not evaluated.", ""]
    summary = {"results": lineage["eval"], "paired": lineage.get("eval_paired"),
               "protocol": lineage.get("eval_protocol")}
    e = lineage.get("eval_settings", {})
    s = e.get("sampling", {})
    head = (f"Each question answered {e.get('n_samples')} times at temperature "
            f"{s.get('temperature')}, top-p {s.get('top_p')}, at most {s.get('max_tokens')} new "
            "tokens (an answer cut at the limit scores wrong); pass@1 is averaged over the samples."
            ) if e else ""
    lines = ["## Evaluation", "", head, ""]
    said = verdicts(summary.get("paired"))
    if said:
        lines += ["**Verdict.** " + " ".join(said), ""]
    return lines + [markdown(summary, verdict=False), ""]


def _limits(lineage: dict) -> list[str]:
    d = lineage.get("curation", {}).get("decontamination", {})
    against = ", ".join(d.get("benchmarks", [])) or "the benchmarks"
    contam = (f"Training prompts were checked against {against} ({d.get('ngram')}-word overlap; "
              f"{d.get('flagged', 0)} rows flagged and dropped)."
              if d.get("enabled") else "Training prompts were not checked for benchmark overlap.")
    return ["## Intended use and limits", "",
            "A research artefact: a small model distilled from a larger teacher's answers. "
            "It inherits the teacher's mistakes and biases and the narrow domain of its prompts; "
            "it is not evaluated beyond the benchmarks above, whose size bounds how small a "
            "difference they can show. Do not use it where wrong answers cause harm.", "",
            contam, ""]


def model_card(lineage: dict, names: CardNames) -> str:
    """README.md of the student repo."""
    from huggingface_hub import ModelCard, ModelCardData

    base = lineage.get("student_base_hub_id")
    results = eval_results(lineage)
    data = ModelCardData(
        license=names.license, library_name="peft" if names.adapter_only else "transformers",
        base_model=base, datasets=[names.dataset_repo], pipeline_tag="text-generation",
        tags=_yaml_list(TAGS + [lineage.get("method", ""), "lora" if names.adapter_only else ""]),
        model_name=names.model_repo if results else None, eval_results=results or None)
    teacher = lineage.get("teacher_hub_id") or lineage.get("teacher")
    student_base = base or f"{lineage.get('student_base')} (not on the hub)"
    what = "a LoRA adapter for" if names.adapter_only else f"{lineage.get('method')} fine-tune of"
    body = [f"# {names.model_repo.split('/')[-1]}", "",
            f"A student: {what} **{student_base}**, distilled from **{teacher}** by the "
            f"distill recipe `{lineage.get('recipe')}` (supervised fine-tuning on "
            f"{lineage.get('data_counts', {}).get('trained', 0) or 0:,} curated teacher traces).",
            "",
            *_usage(lineage, names), *_evaluation_section(lineage), *_data_section(lineage, names),
            *_training_section(lineage), *_limits(lineage),
            "## Lineage", "",
            "Stage keys and package versions of the run (`lineage.json` has it all):",
            "", "```json", json.dumps({"stage_keys": lineage.get("stage_keys", {}),
                                       "versions": lineage.get("versions", {})}, indent=1,
                                      sort_keys=True), "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)).content


def _columns(frame: pd.DataFrame) -> list[str]:
    rows = ["| column | type | meaning |", "|---|---|---|"]
    rows += [f"| {c} | {frame[c].dtype} | {COLUMN_DOCS.get(c, '')} |" for c in frame.columns]
    return rows


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def dataset_configs(with_rejected: bool) -> list[dict]:
    """The card's `configs`: the SFT set as `default` (split train), the rejected rows apart."""
    configs = [{"config_name": "default",
                "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    if with_rejected:
        configs.append({"config_name": "rejected",
                        "data_files": [{"split": "train", "path": "rejected/train-*.parquet"}]})
    return configs


def dataset_card(lineage: dict, names: CardNames, rows: pd.DataFrame,
                 rejected: pd.DataFrame | None) -> str:
    """README.md of the dataset repo: the curated SFT rows, and the rejected ones if given."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        license=names.dataset_license, task_categories=["text-generation"],
        tags=TAGS + ["synthetic", "sft"],
        pretty_name=f"{lineage.get('recipe')} distillation traces",
        size_categories=[_size_category(len(rows))], configs=dataset_configs(rejected is not None))
    cur = lineage.get("curation", {})
    d = cur.get("decontamination", {})
    teacher = lineage.get("teacher_hub_id") or lineage.get("teacher")
    by_reason = (rejected["reject_reason"].value_counts().to_dict()
                 if rejected is not None and len(rejected) else {})
    body = [f"# {names.dataset_repo.split('/')[-1]}", "",
            f"{len(rows):,} supervised fine-tuning rows: answers of **{teacher}** to the "
            "prompts of "
            f"`{lineage.get('prompts', {}).get('source')}`, verified and filtered by the distill "
            f"recipe `{lineage.get('recipe')}`, and the rows the student "
            f"[{names.model_repo}](/{names.model_repo}) was trained on.", "",
            "```python", "from datasets import load_dataset", "",
            f'sft = load_dataset("{names.dataset_repo}", split="train")']
    if rejected is not None:
        body += [f'rejected = load_dataset("{names.dataset_repo}", "rejected", split="train")'
                 f"  # {len(rejected):,} rows with `stage` and `reject_reason`"]
    body += ["```", "", "## Columns", "", *_columns(rows), "",
             "## Counts", "", *funnel_table(lineage), ""]
    if by_reason:
        body += ["Rejected rows in the `rejected` config by reason: "
                 + ", ".join(f"{r} {n:,}" for r, n in by_reason.items()) + ".", ""]
    body += ["## Rejection rules and thresholds", "",
             f"- verification: `{cur.get('verify')}`",
             *[f"- `{name}`: " + (", ".join(f"{k}={v}" for k, v in params.items()) or "on")
               for name, params in cur.get("rules", {}).items()],
             f"- dedupe: {json.dumps(cur.get('dedupe', {}))}; selection: "
             f"{json.dumps(cur.get('selection', {}))}", "",
             "## Decontamination", "",
             (f"Prompts were checked against {', '.join(d.get('benchmarks', [])) or 'no benchmark'}"
              f" ({d.get('extra_files', 0)} extra files; {d.get('ngram')}-word n-grams, "
              f"coverage {d.get('min_coverage')}): {d.get('flagged', 0)} rows flagged and dropped."
              if d.get("enabled") else "Not checked for benchmark overlap."), "",
             "## License", "",
             f"`{names.dataset_license}`, as the recipe states the terms of the teacher's outputs; "
             "check the teacher's own license before reuse.", ""]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)).content
