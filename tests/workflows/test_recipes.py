"""Every recipe that ships loads, passes the checks a CPU machine can make, and the R1-Distill
recipes keep the paper's facts.

No hub access and no GPU: the model checks that need them are left out, and the GPU-only
settings (fsdp, deepspeed_zero3, qlora, ...) are asserted to refuse here with a RecipeError.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from distill.data.benchmarks import BENCHMARKS
from distill.data.prompts import check_columns, load_prompts, read_table
from distill.engines.models import check_model_source
from distill.pipeline.errors import RecipeError
from distill.pipeline.keys import stage_key
from distill.students.config import TrainConfig, validate_for_machine
from distill.teachers.templates import TEMPLATES
from distill.workflows.preflight import preflight
from distill.workflows.recipe import (Recipe, load_recipe, merge_layers, read_layers,
                                      recipe_files)
from helpers import REPO, RESOLVERS

RECIPES_DIR = REPO / "workflows" / "recipes"
RECIPES = recipe_files(RECIPES_DIR)          # every *.yaml but the bases (_*.yaml)
R1_DIR = RECIPES_DIR / "r1_distill"
R1_RECIPES = recipe_files(R1_DIR)

# The six students of the DeepSeek-R1 paper (Table 5): recipe file -> (base model, repo id).
R1_STUDENTS = {
    "qwen2.5-math-1.5b.yaml": ("Qwen/Qwen2.5-Math-1.5B", "R1-Distill-Qwen-1.5B-repro"),
    "qwen2.5-math-7b.yaml": ("Qwen/Qwen2.5-Math-7B", "R1-Distill-Qwen-7B-repro"),
    "qwen2.5-14b.yaml": ("Qwen/Qwen2.5-14B", "R1-Distill-Qwen-14B-repro"),
    "qwen2.5-32b.yaml": ("Qwen/Qwen2.5-32B", "R1-Distill-Qwen-32B-repro"),
    "llama3.1-8b.yaml": ("meta-llama/Llama-3.1-8B", "R1-Distill-Llama-8B-repro"),
    "llama3.3-70b-instruct.yaml": ("meta-llama/Llama-3.3-70B-Instruct", "R1-Distill-Llama-70B-repro"),
}


def _id(path: Path) -> str:
    return str(path.relative_to(RECIPES_DIR))


def gpu_only_settings(train: TrainConfig) -> list[str]:
    """The train settings validate_for_machine refuses without CUDA."""
    found = []
    if train.method == "qlora":
        found.append("qlora")
    if train.strategy != "ddp":
        found.append(f"strategy {train.strategy}")
    if train.attn_implementation == "flash_attention_2":
        found.append("flash_attention_2")
    if train.use_gpu:
        found.append("use_gpu")
    return found


def missing_gpu_packages(train: TrainConfig) -> list[str]:
    import importlib.util

    needs = []
    if train.method == "qlora":
        needs.append("bitsandbytes")
    if train.strategy == "deepspeed_zero3":
        needs.append("deepspeed")
    return [p for p in needs if importlib.util.find_spec(p) is None]


@pytest.fixture(scope="module")
def loaded() -> dict[Path, Recipe]:
    return {path: load_recipe(path) for path in RECIPES}


def test_the_six_r1_distill_recipes_ship():
    assert sorted(p.name for p in R1_RECIPES) == sorted(R1_STUDENTS)
    assert set(R1_RECIPES) <= set(RECIPES), "the glob over workflows/recipes must find them"


def _leaves(tree: dict, prefix: tuple = ()) -> dict[tuple, object]:
    """Every non-mapping value of a tree, by key path (lists count as one value)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def test_r1_recipes_state_only_what_differs():
    """Each student extends the one base and sets only keys whose resolved values are not equal
    across all six (else they belong in the base); the shared sections come from the base alone."""
    own, resolved = {}, {}
    for path in R1_RECIPES:
        layers = read_layers(path)
        assert [Path(f).name for f, _ in layers] == ["_base.yaml", path.name]
        own[path.name] = _leaves(layers[-1][1])
        resolved[path.name] = _leaves(merge_layers(layers))
        assert not {k[0] for k in own[path.name]} & {"seed", "prompts", "curate"}, path.name
    for name, leaves in own.items():
        for key in leaves:
            values = {repr(other.get(key)) for other in resolved.values()}
            assert len(values) > 1, f"{name}: {'.'.join(key)} is equal in all six: base material"


def test_bases_are_not_listed_and_refuse_to_run():
    from typer.testing import CliRunner

    from distill.workflows.cli import app

    base = R1_DIR / "_base.yaml"
    assert base.exists() and base not in RECIPES
    listed = CliRunner().invoke(app, ["recipes"]).output
    assert "qwen2.5-math-1.5b.yaml" in listed and "_base" not in listed
    with pytest.raises(RecipeError) as err:
        load_recipe(base)
    msg = " ".join(str(err.value).split())
    assert "is a base that recipes include (`extends: _base.yaml`), not a recipe to run" in msg
    assert "missing key `name`" in msg and "run a recipe that extends it" in msg


@pytest.mark.parametrize("path", RECIPES, ids=_id)
def test_recipe_loads_with_a_one_line_description(path, loaded):
    recipe = loaded[path]
    assert recipe.description.strip() and "\n" not in recipe.description
    assert recipe.hardware.strip()
    assert recipe.name and recipe.train.student and recipe.teacher.model


@pytest.mark.parametrize("path", RECIPES, ids=_id)
def test_cpu_checks_pass(path, loaded):
    """What preflight checks without hub or GPU: model names, templates, prompt and benchmark
    sources with their columns."""
    recipe = loaded[path]
    base = path.parent
    check_model_source(recipe.teacher.model, "teacher.model")
    check_model_source(recipe.train.student, "train.student")
    assert recipe.teacher.template in TEMPLATES
    assert recipe.evaluate.template in TEMPLATES
    prompts = load_prompts(recipe.prompts, base)
    assert prompts["keep"].sum() > 0, prompts["reject_reason"].value_counts().to_dict()
    assert {"prompt_id", "problem", "reference"} <= set(prompts.columns)
    assert recipe.evaluate.benchmarks, "a recipe that ships evaluates on something"
    for i, spec in enumerate(recipe.evaluate.benchmarks):
        table = read_table(spec.source, field=f"evaluate.benchmarks[{i}].source", base_dir=base)
        check_columns(table, {"problem_column": spec.problem_column,
                              "answer_column": spec.answer_column}, spec.source)
        assert len(table) > 0


@pytest.mark.parametrize("path", RECIPES, ids=_id)
def test_gpu_only_settings_refuse_without_cuda(path, loaded):
    train = loaded[path].train
    gpu_only = gpu_only_settings(train)
    if gpu_only:
        with pytest.raises(RecipeError) as err:
            validate_for_machine(train, has_cuda=False)
        msg = str(err.value)
        assert any(s.split()[-1] in msg for s in gpu_only), msg
        assert "CUDA" in msg or "GPU" in msg, msg
    else:
        validate_for_machine(train, has_cuda=False)
    missing = missing_gpu_packages(train)
    if missing:
        with pytest.raises(RecipeError, match=missing[0]):
            validate_for_machine(train, has_cuda=True)
    else:
        validate_for_machine(train, has_cuda=True)


@pytest.mark.parametrize("path", RECIPES, ids=_id)
def test_preflight_here(path, loaded):
    """The real preflight on this machine: it passes, or (no CUDA here) stops with the GPU
    error and nothing else, since every earlier check passed."""
    import torch

    recipe = loaded[path]
    if gpu_only_settings(recipe.train) and not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="GPU|CUDA"):
            preflight(recipe, path)
    elif missing_gpu_packages(recipe.train):
        with pytest.raises(RecipeError, match="package"):
            preflight(recipe, path)
    else:
        preflight(recipe, path)


def test_r1_recipes_that_need_gpus_say_so():
    """The sharded students (7B and up) refuse a CPU machine; the 1.5B (ddp) does not."""
    for path in R1_RECIPES:
        train = load_recipe(path).train
        if path.name == "qwen2.5-math-1.5b.yaml":
            assert train.strategy == "ddp"
            validate_for_machine(train, has_cuda=False)
        else:
            assert train.strategy in ("fsdp", "deepspeed_zero3") and train.num_workers >= 8
            with pytest.raises(RecipeError, match=f"strategy {train.strategy}"):
                validate_for_machine(train, has_cuda=False)


# -- the paper's facts -----------------------------------------------------------------------

@pytest.mark.parametrize("path", R1_RECIPES, ids=_id)
def test_r1_teacher_follows_the_paper(path):
    t = load_recipe(path).teacher
    assert t.backend == "vllm" and t.model == "deepseek-ai/DeepSeek-R1"
    assert t.force_think is True            # outputs start with "<think>\n"
    assert t.system_prompt is None          # no system prompt
    assert t.template == "r1_math"
    s = t.sampling
    assert (s.temperature, s.top_p, s.max_tokens) == (0.6, 0.95, 32768)
    assert s.n >= 2, "rejection sampling needs k > 1 samples per prompt"
    tp, pp = t.engine["tensor_parallel_size"], t.engine.get("pipeline_parallel_size", 1)
    assert tp * pp >= 8, "the 671B teacher needs a whole node (or two)"
    assert t.engine["max_model_len"] > s.max_tokens, "room for the prompt beside 32,768 new tokens"


@pytest.mark.parametrize("path", R1_RECIPES, ids=_id)
def test_r1_student_training_follows_the_paper(path):
    recipe = load_recipe(path)
    train = recipe.train
    base, repo_id = R1_STUDENTS[path.name]
    assert train.student == base
    assert train.method == "full"           # SFT only, full fine-tune, no RL
    assert train.think_format == "r1"
    assert train.max_length == 32768
    assert train.batching == "packed" and train.gradient_checkpointing and train.bf16 is True
    assert train.learning_rate is not None, "hyperparameters are chosen, not defaulted"
    assert recipe.publish.repo_id == repo_id and recipe.publish.enabled


@pytest.mark.parametrize("path", R1_RECIPES, ids=_id)
def test_r1_curation_has_the_rejection_rules_on(path):
    recipe = load_recipe(path)
    c = recipe.curate
    f = c.filters
    for rule in ("truncated", "wrong_answer", "language_mix", "long_paragraph",
                 "code_in_reasoning", "repetition", "too_long"):
        assert getattr(f, rule).enabled, rule
    assert "math" not in f.code_in_reasoning.allowed_tasks   # math CoT must not hold code blocks
    assert f.too_long.max_tokens <= recipe.train.max_length  # at the SFT max length
    assert c.parse.think_required and c.verify.method == "math"
    assert c.dedupe_prompts is not None and c.dedupe_responses is not None
    assert c.decontam.enabled
    evaluated = {b.source.split(":", 1)[1] for b in recipe.evaluate.benchmarks
                 if b.source.startswith("bundled:")}
    assert evaluated <= set(c.decontam.benchmarks), "decontaminate against what we evaluate on"
    assert set(c.decontam.benchmarks) == set(BENCHMARKS)


@pytest.mark.parametrize("path", R1_RECIPES, ids=_id)
def test_r1_evaluation_follows_the_paper(path):
    recipe = load_recipe(path)
    ev = recipe.evaluate
    assert ev.enabled and ev.template == "r1_math"
    assert (ev.sampling.temperature, ev.sampling.top_p, ev.sampling.max_tokens) == (0.6, 0.95, 32768)
    n = {b.name: b.n_samples or ev.n_samples for b in ev.benchmarks}
    assert n["aime24"] == 64
    assert n["math500"] >= 4
    assert "amc23" in n
    assert ev.engine["max_model_len"] > ev.sampling.max_tokens
    if "Qwen2.5-Math" in recipe.train.student:
        # a 4k-context base: vLLM needs the declared length raised to serve 32k answers
        declared = ev.engine["hf_overrides"]["max_position_embeddings"]
        assert declared >= ev.engine["max_model_len"]


def test_r1_recipes_share_the_teacher_traces():
    """Same prompts, teacher settings, seed and curation: in one run directory the six students
    reuse one generate and one curate output (equal stage keys), as the paper's six students
    learned from the same samples."""
    from distill.workflows.distill import STAGES

    names = ["prompts", "select_prompts", "generate", "curate"]
    shared = [s for s in STAGES if s.name in names]
    assert [s.name for s in shared] == names
    keys = set()
    for path in R1_RECIPES:
        recipe = load_recipe(path)
        done: dict[str, str] = {}
        for stage in shared:
            done[stage.name] = stage_key(stage, recipe, {n: done[n] for n in stage.needs}, RESOLVERS)
        keys.add(tuple(done.values()))
    assert len(keys) == 1, keys
    train_keys = {stage_key(s, load_recipe(p), {"curate": "x"}, RESOLVERS) for p in R1_RECIPES
                  for s in STAGES if s.name == "train"}
    assert len(train_keys) == len(R1_RECIPES), "each student trains into its own folder"
