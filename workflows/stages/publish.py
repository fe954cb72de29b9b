"""publish: the student, its cards and its SFT set into the run's hub folder (and a hub, if asked).

    publish_run(open_run("runs/quickstart"), recipe, cfg)   # the stage and `distill publish`

The stage and the command are one function: it reads the run's finished stages, builds the
lineage (workflows.lineage), the SFT rows (as trained) and the rejected rows (curate's and
train's, each with its stage and reason), and calls students.publish.publish_student.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from distill.pipeline.stage import StageContext, StageResult
from distill.pipeline.store import RunStore, StageOutput
from distill.students.publish import PublishConfig
from distill.workflows.recipe import Recipe

NEEDS = ("prompts", "generate", "curate", "train", "evaluate")
SFT_COLUMNS = ("row_id", "prompt_id", "prompt", "reasoning", "answer_text", "reference",
               "final_answer", "completion_tokens", "teacher")
REJECTED_COLUMNS = ("stage", "reject_reason", "row_id", "request_id", "prompt_id", "problem",
                    "prompt", "text", "reasoning", "answer_text", "reference", "final_answer",
                    "completion_tokens", "finish_reason")


def _columns(frame: pd.DataFrame, wanted: tuple[str, ...]) -> pd.DataFrame:
    return frame[[c for c in wanted if c in frame.columns]].reset_index(drop=True)


def sft_rows(trained: pd.DataFrame, think_format: str) -> pd.DataFrame:
    """The rows the student was trained on, with `messages` (user, assistant) as it saw them."""
    from distill.students.chat import assistant_text

    out = _columns(trained, SFT_COLUMNS)
    if {"prompt", "reasoning", "answer_text"} <= set(out.columns):
        out["messages"] = [[{"role": "user", "content": p},
                            {"role": "assistant", "content": assistant_text(r, a, think_format)}]
                           for p, r, a in zip(out["prompt"], out["reasoning"], out["answer_text"])]
    return out


def rejected_rows(inputs: dict[str, StageOutput]) -> pd.DataFrame:
    """Rows curate and train rejected, each with the stage and reason, for auditing the rules."""
    frames = [inputs[name].to_pandas(rejected=True).assign(stage=name)
              for name in ("curate", "train")]
    frames = [_columns(f, REJECTED_COLUMNS) for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({"stage": pd.Series(dtype=str), "reject_reason": pd.Series(dtype=str)})
    out = pd.concat(frames, ignore_index=True)
    return out.astype({c: "string" for c in ("final_answer", "reference") if c in out})


def final_student(inputs: dict[str, StageOutput]) -> tuple[Path, Path | None]:
    """(model folder, LoRA adapter folder or None) of the student to publish: the onpolicy
    stage's when it ran (its adapter sits on the SFT student, not the base: merged model only),
    else the train stage's."""
    onpolicy = inputs.get("onpolicy")
    if onpolicy is not None and onpolicy.manifest.get("model_dir"):
        return onpolicy.artefact(onpolicy.manifest["model_dir"]), None
    train = inputs["train"]
    adapter = train.manifest.get("adapter_dir")
    return train.artefact("model"), train.artefact(adapter) if adapter else None


def publish_run(store: RunStore, recipe: Recipe, cfg: PublishConfig | None = None,
                inputs: dict[str, StageOutput] | None = None) -> dict:
    """Publish the run in `store` (its stages NEEDS, finished) under `cfg` (default: the recipe's);
    returns where the folders went and what was pushed."""
    from distill.students.publish import publish_student
    from distill.workflows.lineage import lineage

    cfg = cfg or recipe.publish
    inputs = inputs or {name: store.stage(name) for name in NEEDS + ("onpolicy",)
                        if name in NEEDS or name in store.stage_names()}
    facts = lineage(recipe, {name: out.manifest for name, out in inputs.items()})
    train = inputs["train"]
    sft = sft_rows(train.to_pandas(), recipe.train.think_format)
    hub_dir = Path(cfg.hub_dir)
    if not hub_dir.is_absolute():
        hub_dir = store.root.resolve() / hub_dir
    model, adapter = final_student(inputs)
    info = publish_student(model, sft, facts, cfg, hub_dir,
                           cfg.repo_id or f"{recipe.name}-student",
                           adapter_dir=adapter,
                           rejected=rejected_rows(inputs), owner=str(store.root.resolve()),
                           example_prompt=str(sft["prompt"].iloc[0]) if len(sft) else None)
    return {**info, "lineage": facts}


class PublishStage:
    name = "publish"
    version = "3"  # 3: hub-valid cards (ModelCard), rejected rows config, owner check, revision
    needs = NEEDS + ("onpolicy",)
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        return {"publish": recipe.publish, "recipe": recipe.name}

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.recipe.publish
        if not cfg.enabled:
            return StageResult(rows=None, rows_in=0, already_written=True,
                               extra={"counts": {"rows_in": 0, "kept": 0, "rejected": {}}})
        ctx.progress("folders and cards", 0, 1)
        info = publish_run(ctx.store, ctx.recipe, cfg, ctx.inputs)
        facts = info.pop("lineage")
        ctx.progress("folders and cards", 1, 1)
        rows = pd.DataFrame([{"repo_id": info["repo_id"], "model_dir": info["model_dir"],
                              "dataset_dir": info["dataset_dir"],
                              "pushed": ", ".join(p["url"] for p in info["pushed"])}])
        return StageResult(rows=rows, rows_in=1, extra={"published": info, "lineage": facts})
