"""prompts: load the prompt set, give each prompt a stable id, reject unusable rows with a reason."""
from __future__ import annotations

from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe


class PromptsStage:
    name = "prompts"
    version = "1"
    needs: tuple[str, ...] = ()
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        prompts = recipe.prompts
        if prompts.sources:  # weights are the train stage's (stages.train_mix), teachers generate's
            prompts = prompts.model_copy(update={"sources": [
                s.model_copy(update={"weight": None, "teacher": None}) for s in prompts.sources]})
        return {"prompts": prompts}

    def run(self, ctx: StageContext) -> StageResult:
        from distill.data.prompts import load_prompts

        base = ctx.recipe_path.parent if ctx.recipe_path else None
        rows = load_prompts(ctx.recipe.prompts, base)
        return StageResult(rows=rows, rows_in=len(rows))
