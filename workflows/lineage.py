"""A run's lineage as plain data: `lineage(recipe, manifests)`, for the cards and lineage.json.

Everything a reader of a published student needs to know where it came from, taken from the
recipe (names as the user wrote them, with hub ids for built-in models) and the stage manifests
(counts, tokens, seconds, training metrics, evaluation): teacher and sampling, prompt sources,
the funnel by stage and reason, the curation rules and thresholds, decontamination, training
settings, evaluation results with their protocol and the paired comparison, versions and keys.
"""
from __future__ import annotations

from typing import Any

from distill.workflows.recipe import Recipe

FUNNEL_STAGES = ("prompts", "generate", "curate", "train")
GENERATION_FIGURES = ("prompt_tokens", "completion_tokens", "cost", "seconds", "finish_reasons",
                      "reproducible_sampling")
TRAIN_SETTINGS = ("method", "epochs", "max_steps", "learning_rate", "lr_scheduler", "warmup_ratio",
                  "weight_decay", "per_device_batch_tokens", "batch_size",
                  "gradient_accumulation_steps", "max_length", "overlong", "batching",
                  "think_format", "seed", "num_workers", "strategy")


def funnel(manifests: dict[str, dict]) -> list[dict]:
    """Rows in, kept and rejected by reason for each stage that filters rows, in order."""
    out = []
    for n in (n for n in FUNNEL_STAGES if n in manifests):
        m = manifests[n]
        rejected = dict(sorted(m.get("rejected", {}).items(), key=lambda kv: -kv[1]))
        out.append({"stage": n, "rows_in": m.get("rows_in", 0), "kept": m.get("kept", 0),
                    "rejected": rejected})
    return out


def curation_rules(recipe: Recipe, rejected: dict[str, int]) -> dict[str, Any]:
    """The curate settings that decide what is kept: verification, the enabled rules with their
    thresholds, dedupe, selection, and decontamination with how many rows it flagged."""
    c = recipe.curate
    rules = {}
    for name in type(c.filters).model_fields:
        rule = getattr(c.filters, name)
        if hasattr(rule, "enabled") and rule.enabled:
            rules[name] = {k: v for k, v in rule.model_dump(mode="json").items() if k != "enabled"}
    d = c.decontam
    return {
        "verify": c.verify.method, "rules": rules,
        "dedupe": {"prompts": c.dedupe_prompts is not None,
                   "responses": c.dedupe_responses is not None,
                   "across_prompts": c.dedupe_across_prompts is not None},
        "selection": c.selection.model_dump(mode="json"),
        "decontamination": {"enabled": d.enabled, "benchmarks": list(d.benchmarks),
                            "extra_files": len(d.extra_paths), "ngram": d.ngram,
                            "min_coverage": d.min_coverage,
                            "flagged": rejected.get("contaminated", 0)},
    }


def training(recipe: Recipe, manifest: dict) -> dict[str, Any]:
    """The training settings that shape the student, and what training measured."""
    t = recipe.train
    out = {k: getattr(t, k) for k in TRAIN_SETTINGS}
    if t.method != "full":
        out["lora"] = t.lora.model_dump(mode="json")
    metrics = manifest.get("metrics", {})
    losses = metrics.get("loss_history", [])
    out.update(steps=metrics.get("global_step"), final_loss=losses[-1]["loss"] if losses else None,
               loss_history=losses, tokens_per_second=metrics.get("tokens_per_second"),
               seconds=manifest.get("seconds"))
    return out


def lineage(recipe: Recipe, manifests: dict[str, dict]) -> dict[str, Any]:
    """The lineage of a run whose stages wrote `manifests` (stage name -> manifest)."""
    from distill.engines.models import hub_id

    t, gen = recipe.teacher, manifests.get("generate", {})
    rejected: dict[str, int] = {}
    for name in FUNNEL_STAGES:
        for reason, n in manifests.get(name, {}).get("rejected", {}).items():
            rejected[f"{name}:{reason}"] = rejected.get(f"{name}:{reason}", 0) + n
    evaluation = manifests.get("evaluate", {})
    return {
        "recipe": recipe.name, "seed": recipe.seed,
        "teacher": t.model, "teacher_hub_id": hub_id(t.model) if t.backend == "vllm" else None,
        "teacher_settings": {"backend": t.backend, "template": t.template,
                             "system_prompt": t.system_prompt, "few_shot": len(t.few_shot),
                             "force_think": t.force_think,
                             "sampling": t.sampling.model_dump(mode="json")},
        "sampling": t.sampling.model_dump(mode="json"),
        "student_base": recipe.train.student, "student_base_hub_id": hub_id(recipe.train.student),
        "method": recipe.train.method,
        "prompts": {"source": recipe.prompts.source, "limit": recipe.prompts.limit,
                    "count": manifests.get("prompts", {}).get("kept")},
        "data_counts": {"prompts": manifests.get("prompts", {}).get("kept"),
                        "traces": gen.get("kept"),
                        "curated": manifests.get("curate", {}).get("kept"),
                        "trained": manifests.get("train", {}).get("kept"), "rejected": rejected},
        "funnel": funnel(manifests),
        "generation": {k: gen.get(k) for k in GENERATION_FIGURES},
        "curation": curation_rules(recipe, manifests.get("curate", {}).get("rejected", {})),
        "training": training(recipe, manifests.get("train", {})),
        "eval": evaluation.get("results", {}), "eval_paired": evaluation.get("paired", {}),
        "eval_protocol": evaluation.get("protocol", {}),
        "eval_settings": {"n_samples": recipe.evaluate.n_samples,
                          "sampling": recipe.evaluate.sampling.model_dump(mode="json"),
                          "template": recipe.evaluate.template},
        "stage_keys": {name: m["key"] for name, m in manifests.items() if "key" in m},
        "versions": manifests.get("train", {}).get("versions", {}),
    }
