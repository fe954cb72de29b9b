"""Recipe includes: `extends: FILE` (relative to the including file) deep-merges the recipe over
its base (mappings key by key, lists and scalars replace), chains, refuses cycles and missing
bases with a RecipeError, and `--set` applies after the merge."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from distill.pipeline.errors import RecipeError
from distill.workflows.recipe import Recipe, deep_merge, load_recipe
from helpers import REPO

SMOKE = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
MATH500 = {"name": "math500", "source": "bundled:math500"}   # smoke's one benchmark has a limit


def write(path: Path, tree: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree))
    return path


def flat(**edits) -> dict:
    """The smoke recipe with `edits` ({"a.b": value}) set in one flat file, resolved."""
    tree = copy.deepcopy(SMOKE)
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node = tree
        for key in parents:
            node = node[key]
        node[last] = value
    return Recipe.model_validate(tree).model_dump()


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 1, "c": {"d": 1}}
    over = {"a": {"y": [3], "z": {"j": 2}}, "b": None, "c": 5}
    merged = deep_merge(base, over)
    assert merged == {"a": {"x": 1, "y": [3], "z": {"k": 1, "j": 2}}, "b": None, "c": 5}
    assert base["a"] == {"x": 1, "y": [1, 2], "z": {"k": 1}}, "inputs untouched"


def test_extends_deep_merges_relative_to_the_including_file(tmp_path):
    write(tmp_path / "bases" / "_base.yaml", SMOKE)
    leaf = write(tmp_path / "students" / "leaf.yaml", {
        "extends": "../bases/_base.yaml",
        "name": "leaf",
        "teacher": {"sampling": {"n": 3}},                    # a nested key; its siblings stay
        "evaluate": {"benchmarks": [MATH500]},                # a list replaces: no append, no
        "prompts": {"answer_column": None},                   # item merge; null replaces too
    })
    got = load_recipe(leaf).model_dump()
    assert got == flat(**{"name": "leaf", "teacher.sampling.n": 3,
                          "evaluate.benchmarks": [MATH500], "prompts.answer_column": None})
    assert got["teacher"]["sampling"]["temperature"] == SMOKE["teacher"]["sampling"]["temperature"]


def test_chains_resolve_each_path_from_its_own_file_and_set_applies_last(tmp_path):
    write(tmp_path / "_base.yaml", SMOKE)
    write(tmp_path / "mid" / "_mid.yaml", {"extends": "../_base.yaml", "seed": 7,
                                           "train": {"epochs": 3, "learning_rate": 1.0e-4}})
    leaf = write(tmp_path / "mid" / "deeper" / "leaf.yaml", {"extends": "../_mid.yaml",
                                                             "train": {"epochs": 4}})
    got = load_recipe(leaf)
    assert got.model_dump() == flat(**{"seed": 7, "train.epochs": 4, "train.learning_rate": 1.0e-4})
    got = load_recipe(leaf, ["train.epochs=2", "seed=9"])      # --set wins over every file
    assert (got.train.epochs, got.seed, got.train.learning_rate) == (2, 9, 1.0e-4)


def test_cycles_are_refused_naming_the_files(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml", **SMOKE})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "a.yaml")
    msg = str(err.value)
    assert "cycle (a.yaml -> b.yaml -> a.yaml)" in msg and "fix: remove `extends`" in msg
    write(tmp_path / "self.yaml", {"extends": "./self.yaml"})
    with pytest.raises(RecipeError, match=r"cycle \(self.yaml -> self.yaml\)"):
        load_recipe(tmp_path / "self.yaml")


def test_a_missing_or_malformed_base_names_the_including_file(tmp_path):
    leaf = write(tmp_path / "r" / "leaf.yaml", {"extends": "_bsae.yaml", **SMOKE})
    with pytest.raises(RecipeError) as err:
        load_recipe(leaf)
    msg = str(err.value)
    assert str(leaf) in msg and str(tmp_path / "r" / "_bsae.yaml") in msg
    assert "does not exist" in msg
    assert "relative to the including file" in msg
    write(leaf, {"extends": ["_a.yaml", "_b.yaml"], **SMOKE})
    with pytest.raises(RecipeError, match="must name one file"):
        load_recipe(leaf)


def test_validation_errors_name_the_file_or_set_that_set_the_key(tmp_path):
    base = copy.deepcopy(SMOKE)
    base["teacher"]["temprature"] = 0.5
    base["teacher"]["sampling"]["n"] = 0
    write(tmp_path / "_base.yaml", base)
    leaf = write(tmp_path / "leaf.yaml", {"extends": "_base.yaml", "train": {"epochs": "many"}})
    with pytest.raises(RecipeError) as err:
        load_recipe(leaf, ["seed=x"])
    lines = {line.split("`")[1]: line for line in str(err.value).splitlines() if "`" in line}
    base_note = f"(from {tmp_path / '_base.yaml'})"
    assert lines["teacher.temprature"].startswith("  unknown key")
    assert base_note in lines["teacher.temprature"]
    assert base_note in lines["teacher.sampling.n"]
    assert "(from" not in lines["train.epochs"], "set by the file that was run: no note"
    assert lines["seed"].endswith("(from --set)")
