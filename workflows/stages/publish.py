"""publish: the student, its cards and its SFT set into the local hub folder (and a hub, if asked)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe


class PublishStage:
    name = "publish"
    version = "2"  # 2: lineage and model card carry the paired comparison and the eval rules
    needs = ("prompts", "generate", "curate", "train", "evaluate", "onpolicy")
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        return {"publish": recipe.publish, "recipe": recipe.name}

    def lineage(self, ctx: StageContext) -> dict:
        m = {name: out.manifest for name, out in ctx.inputs.items()}
        recipe = ctx.recipe
        rejected: dict[str, int] = {}
        for name in ("prompts", "generate", "curate", "train"):
            for reason, n in m[name]["rejected"].items():
                rejected[f"{name}:{reason}"] = rejected.get(f"{name}:{reason}", 0) + n
        return {
            "recipe": recipe.name, "teacher": recipe.teacher.model, "student_base": recipe.train.student,
            "method": recipe.train.method, "seed": recipe.seed,
            "sampling": recipe.teacher.sampling.model_dump(),
            "data_counts": {"prompts": m["prompts"]["kept"], "traces": m["generate"]["kept"],
                            "curated": m["curate"]["kept"], "trained": m["train"]["kept"],
                            "rejected": rejected},
            "eval": m["evaluate"].get("results", {}),
            "eval_paired": m["evaluate"].get("paired", {}),
            "eval_protocol": m["evaluate"].get("protocol", {}),
            "stage_keys": {name: mm["key"] for name, mm in m.items()},
            "versions": m["train"].get("versions", {}),
        }

    def run(self, ctx: StageContext) -> StageResult:
        from distill.students.publish import publish_student

        recipe = ctx.recipe
        cfg = recipe.publish
        if not cfg.enabled:
            return StageResult(rows=None, rows_in=0, already_written=True,
                               extra={"counts": {"rows_in": 0, "kept": 0, "rejected": {}}})
        repo_id = cfg.repo_id or f"{recipe.name}-student"
        hub_dir = Path(cfg.hub_dir)
        if not hub_dir.is_absolute():
            hub_dir = ctx.store.root.resolve().parent / hub_dir
        train = ctx.inputs["train"]
        sft = train.to_pandas()
        sft = sft[[c for c in ("row_id", "prompt_id", "prompt", "reasoning", "answer_text",
                                "reference", "final_answer", "completion_tokens", "teacher") if c in sft]]
        lineage = self.lineage(ctx)
        onpolicy = ctx.inputs["onpolicy"].manifest.get("model_dir")  # the final student
        model = ctx.inputs["onpolicy"].artefact(onpolicy) if onpolicy else train.artefact("model")
        info = publish_student(model, sft, lineage, cfg, hub_dir, repo_id)
        rows = pd.DataFrame([{"repo_id": repo_id, **info, "pushed": ", ".join(info["pushed"])}])
        return StageResult(rows=rows, rows_in=1, extra={"published": info, "lineage": lineage})
