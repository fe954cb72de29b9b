"""The distillation workflow: prompts -> [select_prompts] -> generate -> curate -> train ->
[onpolicy] -> evaluate -> publish (onpolicy only when the recipe has an `onpolicy:` section).

    distill run workflows/recipes/quickstart.yaml

Each stage reads its inputs' Parquet from the run store and writes its own; a stage whose
manifest exists for the same key is skipped, so a re-run resumes where the last one stopped.
"""
from __future__ import annotations

from distill.workflows.stages.curate import CurateStage
from distill.workflows.stages.evaluate import EvaluateStage
from distill.workflows.stages.generate_given import GivenTracesGenerate
from distill.workflows.stages.onpolicy import OnPolicyStage
from distill.workflows.stages.prompts import PromptsStage
from distill.workflows.stages.publish import PublishStage
from distill.workflows.stages.select_prompts import AfterSelection, SelectPromptsStage
from distill.workflows.stages.train_mix import MixedTrain

STAGES = [PromptsStage(), SelectPromptsStage(), AfterSelection(GivenTracesGenerate()), CurateStage(),
          MixedTrain(), OnPolicyStage(), EvaluateStage(), PublishStage()]
