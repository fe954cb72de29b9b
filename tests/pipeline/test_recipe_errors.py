"""Bad input stops `distill run` before any work, with a message naming the key, file or column."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from distill.pipeline.errors import RecipeError
from distill.workflows.recipe import load_recipe
from helpers import REPO, run_cli

SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"


def write_recipe(tmp_path: Path, edit) -> Path:
    tree = yaml.safe_load(SMOKE.read_text())
    edit(tree)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def fails_before_work(tmp_path: Path, recipe: Path, home: Path, *extra: str) -> str:
    run_dir = tmp_path / "run"
    proc = run_cli(["run", str(recipe), "--run-dir", str(run_dir), *extra], home=home,
                   cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not run_dir.exists(), "a bad recipe must stop before any stage runs"
    return " ".join((proc.stdout + proc.stderr).split())


def test_unknown_key_names_it_and_suggests(tmp_path):
    path = write_recipe(tmp_path, lambda t: t["teacher"].update(temprature=0.5))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "teacher.temprature" in msg
    assert "valid keys here" in msg or "did you mean" in msg


def test_mistyped_nested_key_suggests_nearest(tmp_path):
    path = write_recipe(tmp_path, lambda t: t["train"].update(learnin_rate=1e-4))
    with pytest.raises(RecipeError, match=r"did you mean `train.learning_rate`"):
        load_recipe(path)


def test_bad_value_names_key(tmp_path):
    path = write_recipe(tmp_path, lambda t: t["teacher"]["sampling"].update(n=0))
    with pytest.raises(RecipeError, match=r"teacher.sampling.n"):
        load_recipe(path)


def test_set_override_is_parsed_as_yaml_and_validated(tmp_path):
    recipe = load_recipe(SMOKE, ["train.epochs=2", "curate.filters.too_short.min_tokens=7"])
    assert recipe.train.epochs == 2.0
    assert recipe.curate.filters.too_short.min_tokens == 7
    with pytest.raises(RecipeError, match="train.epoch"):
        load_recipe(SMOKE, ["train.epoch=2"])


def test_cli_unknown_key(tmp_path, distill_home):
    path = write_recipe(tmp_path, lambda t: t.update(promts={"source": "x"}))
    out = fails_before_work(tmp_path, path, distill_home)
    assert "promts" in out and "did you mean `prompts`" in out


def test_cli_missing_prompt_file(tmp_path, distill_home):
    path = write_recipe(tmp_path, lambda t: t["prompts"].update(source="no_such_prompts.jsonl"))
    out = fails_before_work(tmp_path, path, distill_home)
    assert "prompts.source" in out and "no_such_prompts.jsonl" in out and "does not exist" in out


def test_cli_prompt_file_without_named_column(tmp_path, distill_home):
    pd.DataFrame({"question": ["1+1?"], "answer": ["2"]}).to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    path = write_recipe(tmp_path, lambda t: t["prompts"].update(source=str(tmp_path / "p.jsonl")))
    out = fails_before_work(tmp_path, path, distill_home)
    assert "prompts.problem_column" in out and "'problem'" in out and "question" in out


def test_cli_empty_prompt_set(tmp_path, distill_home):
    (tmp_path / "empty.jsonl").write_text("")
    path = write_recipe(tmp_path, lambda t: t["prompts"].update(source=str(tmp_path / "empty.jsonl")))
    out = fails_before_work(tmp_path, path, distill_home)
    assert "empty.jsonl" in out and ("no rows" in out or "empty" in out)


def test_cli_malformed_prompt_file(tmp_path, distill_home):
    (tmp_path / "bad.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{not json\n')
    path = write_recipe(tmp_path, lambda t: t["prompts"].update(source=str(tmp_path / "bad.jsonl")))
    out = fails_before_work(tmp_path, path, distill_home)
    assert "bad.jsonl" in out and "cannot read" in out


def test_cli_student_path_missing(tmp_path, distill_home):
    path = write_recipe(tmp_path, lambda t: t["train"].update(student="./models/not-here"))
    out = fails_before_work(tmp_path, path, distill_home)
    assert "train.student" in out and "not-here" in out and "does not exist" in out


def test_cli_qlora_on_cpu_is_refused(tmp_path, distill_home):
    path = write_recipe(tmp_path, lambda t: t["train"].update(method="qlora"))
    out = fails_before_work(tmp_path, path, distill_home)
    assert "QLoRA needs a CUDA GPU" in out


def test_rows_without_reference_are_rejected_with_reason(tmp_path):
    from distill.data.prompts import load_prompts
    from distill.workflows.recipe import PromptsConfig

    pd.DataFrame({"problem": ["a?", "", "c?", "a?"], "answer": ["1", "2", None, "1"]}).to_json(
        tmp_path / "p.jsonl", orient="records", lines=True)
    rows = load_prompts(PromptsConfig(source=str(tmp_path / "p.jsonl")))
    assert rows["reject_reason"].tolist() == [None, "empty_problem", "missing_reference", "duplicate_prompt_id"]
    assert rows["keep"].tolist() == [True, False, False, False]


def test_which_row_keeps_a_repeated_prompt_id_does_not_depend_on_file_order(tmp_path):
    from distill.data.prompts import load_prompts
    from distill.workflows.recipe import PromptsConfig

    rows = pd.DataFrame({"id": ["x", "y", "x"], "problem": ["a?", "b?", "c?"], "answer": ["1", "2", "3"]})
    kept = []
    for name, frame in (("in_order", rows), ("reversed", rows.iloc[::-1])):
        frame.to_json(tmp_path / f"{name}.jsonl", orient="records", lines=True)
        out = load_prompts(PromptsConfig(source=str(tmp_path / f"{name}.jsonl"), id_column="id"))
        assert sorted(out["reject_reason"].fillna("")) == ["", "", "duplicate_prompt_id"]
        kept.append(sorted(out.loc[out["keep"], "problem"]))
    assert kept[0] == kept[1]
