"""Stage keys see everything that changes a result and nothing else (pipeline.keys).

The walk below changes every field of the recipe schema, one at a time, and computes every
stage's key with the workflow's real resolvers: a field declared RUNTIME changes no key; any
other field changes the key of the stages that read it and exactly the stages that follow them.
Files and model folders enter keys by content: edited in place they change keys, moved they do not.
"""
from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from distill.pipeline.keys import how_keyed, key_payload
from distill.pipeline.runner import plan_keys
from distill.workflows.distill import STAGES
from distill.workflows.fingerprints import resolvers
from distill.workflows.recipe import Recipe, load_recipe
from helpers import REPO

SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"
JUDGE = {"backend": "openai", "model": "judge-v1", "template": "plain",
         "sampling": {"max_tokens": 64}}


def _descendants(names: set[str]) -> set[str]:
    out = set(names)
    for stage in STAGES:  # STAGES is in dependency order
        if any(n in out for n in stage.needs):
            out.add(stage.name)
    return out


def _set(tree: dict, path: tuple, value) -> None:
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


def _get(tree: dict, path: tuple):
    for part in path:
        tree = tree[part]
    return tree


def _leaves(model: BaseModel, prefix: tuple = ()):
    """(path, field, value) for every leaf setting; sections and lists of sections recurse."""
    for name, field in type(model).model_fields.items():
        value, path = getattr(model, name), prefix + (name,)
        if isinstance(value, BaseModel) and how_keyed(field) is None:
            yield from _leaves(value, path)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for i, item in enumerate(value):
                yield from _leaves(item, path + (i,))
        else:
            yield path, field, value


def _fill_optional_sections(model_type: type[BaseModel], tree: dict) -> None:
    """Set every optional section left out (None) to its defaults, so the walk reaches its fields."""
    for name, field in model_type.model_fields.items():
        sections = [a for a in typing.get_args(field.annotation) if isinstance(a, type)
                    and issubclass(a, BaseModel)]
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections = [field.annotation]
        if not sections or isinstance(tree.get(name), list):  # a list of sections: left as it is
            continue
        if tree.get(name) is None:
            try:
                tree[name] = sections[0]().model_dump(mode="json")
            except Exception:  # a section with required fields (judge_teacher): set by hand
                continue
        _fill_optional_sections(sections[0], tree[name])


def _bounds(field) -> dict:
    out = {}
    for m in field.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(m, attr, None) is not None:
                out[attr] = getattr(m, attr)
    return out


def _literal_choices(annotation) -> tuple:
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg)
    return ()


def _other_number(value, field, kind):
    b = _bounds(field)
    if kind is int:
        new = 1 if value is None else value + 1
        if "le" in b and new > b["le"] or "lt" in b and new >= b["lt"]:
            new = value - 1
        return max(new, b.get("ge", new))
    new = 0.5 if not value else value / 2
    lo = b.get("ge", b.get("gt", None))
    return new if lo is None or new > lo or (new == lo and "ge" in b) else value + 0.1


def changed_value(field, value):
    """A valid value other than `value`, from the field's type and bounds."""
    choices = [c for c in _literal_choices(field.annotation) if c != value]
    if choices:
        return choices[0]
    kinds0 = typing.get_args(field.annotation) or (field.annotation,)
    if isinstance(value, bool) or (value is None and bool in kinds0):
        return not value
    kinds = {a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type)}
    if isinstance(value, int) or (value is None and int in kinds and float not in kinds):
        return _other_number(value, field, int)
    if isinstance(value, float) or (value is None and float in kinds):
        return _other_number(value, field, float)
    if isinstance(value, str) or (value is None and str in kinds):
        return (value or "") + "_changed"
    if isinstance(value, list):
        return [*value, "changed"]
    if isinstance(value, dict):
        return {**value, "changed": 1}
    raise AssertionError(f"no changed value for {value!r} ({field.annotation})")


@pytest.fixture(scope="module")
def walk_env(tmp_path_factory, distill_home):
    """A smoke recipe with every optional section filled in, files of its own, and resolvers."""
    work = tmp_path_factory.mktemp("keys")
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)})
                               + "\n" for i in range(6)))
    (work / "extra_eval.jsonl").write_text(json.dumps({"problem": "What is 2 + 2 exactly?"}) + "\n")
    (work / "extra_eval2.jsonl").write_text(json.dumps({"problem": "What is 3 + 3 exactly?"}) + "\n")
    tree = load_recipe(SMOKE).model_dump(mode="json")
    tree["prompts"]["source"] = str(prompts)
    tree["curate"]["judge_teacher"] = JUDGE
    _fill_optional_sections(Recipe, tree)
    tree["curate"]["decontam"]["extra_paths"] = [str(work / "extra_eval.jsonl")]
    tree = Recipe.model_validate(tree).model_dump(mode="json")  # every default spelled out
    return work, tree, resolvers(work)


# Fields whose generic change is not a valid recipe on its own: (extra settings on both sides,
# the changed value). Paths are tuples into the recipe tree.
SPECIAL = {
    ("prompts", "source"): ({}, "bundled:arithmetic"),
    ("teacher", "model"): ({}, "tiny-qwen2"),
    ("train", "student"): ({}, "tiny-qwen2"),
    ("teacher", "device"): ({}, "cuda"),
    ("teacher", "few_shot"): ({}, [{"problem": "What is 1 + 1?", "answer": "2"}]),
    ("curate", "judge_teacher", "device"): ({}, "cuda"),
    ("curate", "judge_teacher", "few_shot"): ({}, [{"problem": "What is 1 + 1?", "answer": "2"}]),
    ("evaluate", "benchmarks", 0, "source"): ({}, "bundled:arithmetic"),
    ("curate", "decontam", "benchmarks"): ({}, ["math500"]),
    ("curate", "decontam", "extra_paths"): ({}, "EXTRA2"),
    ("curate", "selection", "keep_all_correct"): ({("curate", "selection", "max_per_prompt"): None}, False),
    ("train", "batch_size"): ({("train", "batching"): "padded"}, 4),
    ("train", "strategy"): ({("train", "num_workers"): 2}, "fsdp"),
    ("train", "max_length"): ({}, 128),
    ("train", "per_device_batch_tokens"): ({}, 2048),
    ("onpolicy", "teacher"): ({}, "tiny-qwen2"),
    ("prompts", "traces", "replace"): ({}, {"<|begin_of_thought|>": "<think>"}),
    ("prompts", "traces", "tokenizer"): ({}, "tiny-qwen2"),
    ("prompts", "sources"): ({}, []),   # the other form: its fields are walked in test_byo_traces
    ("select_prompts", "model"): ({}, "tiny-qwen2"),
    ("onpolicy", "backend"): ({("onpolicy", "estimator"): "sampled"}, "vllm"),
    ("onpolicy", "num_workers"): ({("onpolicy", "backend"): "vllm",
                                   ("onpolicy", "estimator"): "sampled"}, 2),
}


# Settings the base recipe's context makes moot: its judge is an HTTP teacher (no local engine).
UNREAD = {("curate", "judge_teacher", "device"), ("curate", "judge_teacher", "engine")}


def _keys(tree: dict, res) -> dict[str, str]:
    return plan_keys(STAGES, Recipe.model_validate(tree), res)


def _own_configs(tree: dict, res) -> dict[str, str]:
    recipe = Recipe.model_validate(tree)
    return {s.name: json.dumps(key_payload(s.config(recipe), res), sort_keys=True, default=str)
            for s in STAGES}


def test_every_field_changes_exactly_the_keys_it_should(walk_env):
    work, base_tree, res = walk_env
    base = Recipe.model_validate(base_tree)
    checked = {"runtime": 0, "result": 0}
    for path, field, value in _leaves(base):
        if path[-1] in ("bands", "rows"):  # LSH shape: both or neither
            SPECIAL[path] = ({(*path[:-1], "bands"): 8, (*path[:-1], "rows"): 8},
                             16 if path[-1] == "bands" else 4)
        extra, new = SPECIAL.get(path, ({}, None))
        if path not in SPECIAL:
            new = changed_value(field, value)
        if new == "EXTRA2":
            new = [str(work / "extra_eval2.jsonl")]
        before = json.loads(json.dumps(base_tree))
        for p, v in extra.items():
            _set(before, p, v)
        after = json.loads(json.dumps(before))
        if _get(after, path) == new:
            continue
        _set(after, path, new)
        k0, k1 = _keys(before, res), _keys(after, res)
        changed = {n for n in k0 if k0[n] != k1[n]}
        name = ".".join(map(str, path))
        if how_keyed(field) == "runtime" or path in UNREAD:
            assert not changed, f"{name} does not change results but changed the keys of {changed}"
            checked["runtime"] += 1
            continue
        c0, c1 = _own_configs(before, res), _own_configs(after, res)
        readers = {n for n in c0 if c0[n] != c1[n]}
        assert readers, f"{name} changes results but no stage's key holds it (declare it RUNTIME " \
                        "if it does not change results, or remove it if nothing reads it)"
        assert changed == _descendants(readers), f"{name}: keys changed {changed}, readers {readers}"
        checked["result"] += 1
    assert checked["runtime"] >= 15 and checked["result"] >= 100, checked


@pytest.mark.parametrize("arg, value, changes", [
    ("revision", "abc123", True), ("tokenizer_revision", "abc123", True),
    ("hf_overrides", {"rope_theta": 1e6}, True), ("kv_cache_dtype", "fp8", True),
    ("quantization", "fp8", True), ("max_model_len", 4096, True), ("dtype", "float16", True),
    ("gpu_memory_utilization", 0.5, False), ("tensor_parallel_size", 8, False),
    ("max_num_seqs", 64, False), ("enforce_eager", False, False),
])
def test_engine_arguments_that_change_outputs_are_in_the_keys(walk_env, arg, value, changes):
    _, tree, res = walk_env
    for section, stage in (("teacher", "generate"), ("evaluate", "evaluate")):
        after = json.loads(json.dumps(tree))
        after[section]["engine"][arg] = value
        k0, k1 = _keys(tree, res), _keys(after, res)
        assert (k0[stage] != k1[stage]) is changes, (section, arg)


def test_a_prompt_file_edited_in_place_changes_the_key_and_a_moved_one_does_not(walk_env, tmp_path):
    _, tree, res = walk_env
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"problem": "What is 1 + 1?", "answer": "2"}\n')
    tree = json.loads(json.dumps(tree))
    tree["prompts"]["source"] = str(prompts)
    k0 = _keys(tree, res)
    prompts.write_text('{"problem": "What is 1 + 1?", "answer": "3"}\n')  # same size, new answer
    k1 = _keys(tree, res)
    assert k1["prompts"] != k0["prompts"]
    with prompts.open("a") as f:
        f.write('{"problem": "What is 2 + 2?", "answer": "4"}\n')        # a prompt added
    k2 = _keys(tree, res)
    assert len({k0["prompts"], k1["prompts"], k2["prompts"]}) == 3
    moved = tmp_path / "elsewhere" / "renamed.jsonl"
    moved.parent.mkdir()
    shutil.copy(prompts, moved)
    tree["prompts"]["source"] = str(moved)
    assert _keys(tree, res) == k2


def test_a_model_folder_replaced_under_the_same_path_changes_generate_and_train(walk_env, tmp_path):
    from distill.engines.models import resolve_model

    _, tree, res = walk_env
    folder = tmp_path / "model"
    shutil.copytree(resolve_model("tiny-llama"), folder)
    tree = json.loads(json.dumps(tree))
    tree["teacher"]["model"] = tree["train"]["student"] = str(folder)
    k0 = _keys(tree, res)
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["chat_template"] = "{{ messages[0]['content'] }}"  # a new chat template
    config.write_text(json.dumps(data))
    k1 = _keys(tree, res)
    assert k1["prompts"] == k0["prompts"]
    assert all(k1[n] != k0[n] for n in ("generate", "curate", "train", "evaluate", "publish"))
    copy = tmp_path / "same-model-elsewhere"
    shutil.copytree(folder, copy)
    tree["teacher"]["model"] = tree["train"]["student"] = str(copy)
    assert _keys(tree, res) == k1


def test_edited_benchmark_and_decontamination_files_change_their_stages(walk_env, tmp_path):
    work, tree, res = walk_env
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"problem": "What is 5 + 5?", "answer": "10"}\n')
    tree = json.loads(json.dumps(tree))
    tree["evaluate"]["benchmarks"][0]["source"] = str(bench)
    k0 = _keys(tree, res)
    bench.write_text('{"problem": "What is 5 + 5?", "answer": "11"}\n')
    k1 = _keys(tree, res)
    assert {n for n in k0 if k0[n] != k1[n]} == {"evaluate", "publish"}
    extra = Path(tree["curate"]["decontam"]["extra_paths"][0])
    saved = extra.read_text()
    try:
        extra.write_text(json.dumps({"problem": "What is 7 + 7 exactly?"}) + "\n")
        k2 = _keys(tree, res)
    finally:
        extra.write_text(saved)
    assert {n for n in k1 if k1[n] != k2[n]} == {"curate", "train", "onpolicy", "evaluate",
                                                 "publish"}
