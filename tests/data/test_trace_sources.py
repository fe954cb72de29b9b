"""Trace sources (bring your own traces): files that already hold answers become generate rows.

The bundled R1-Distill traces (real model output), an OpenR1-Math-shaped Parquet file (lists of
generations, one trace per element) and an OpenThoughts-shaped JSON Lines file (conversations of
{from, value}) go through the prompts stage's loader and into generate rows, which the curate
rules read as they read a teacher's. Bad rows are rejected with a reason; a wrong column name is
an error naming the recipe field and the file.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from distill.data.curate import CurateConfig, curate
from distill.data.prompts import load_prompts
from distill.data.trace_sources import GENERATE_COLUMNS, given_rows, split_given
from distill.pipeline.errors import RecipeError
from distill.workflows.recipe import PromptsConfig

R1 = {"source": "bundled:r1_distill_qwen7b_math500", "answer_column": "ground_truth",
          "id_column": "item_id", "traces": {"response_column": "full_response",
                                       "teacher_column": "model_short_name",
                                       "completion_tokens_column": "total_generated_tokens"}}


def _generate_rows(prompts: pd.DataFrame) -> pd.DataFrame:
    ask, given = split_given(prompts[prompts["keep"]])
    assert ask.empty
    return given_rows(given)


def test_the_bundled_r1_traces_become_generate_rows_and_curate_like_a_teachers():
    prompts = load_prompts(PromptsConfig(**R1))
    assert len(prompts) == 20 and prompts["keep"].all()
    rows = _generate_rows(prompts)
    assert list(rows.columns) == GENERATE_COLUMNS
    assert set(rows["teacher"]) == {"R1-Distill-Qwen-7B"} and (rows["cost"] == 0).all()
    raw = pd.read_json("tests/fixtures/r1traces/math500_r1_distill_qwen7b_pilot.jsonl", lines=True)
    assert rows["text"].tolist() == raw["full_response"].tolist()
    assert rows["completion_tokens"].tolist() == raw["total_generated_tokens"].tolist()
    assert rows["request_id"].tolist() == [f"{i}:0" for i in raw["item_id"]]
    cfg = CurateConfig.model_validate({"decontam": {"benchmarks": ["aime24"]},
                                       "filters": {"too_long": {"max_tokens": 7168}}})
    out = curate(rows, cfg).set_index("prompt_id")
    assert out.loc["math500_0009", "reject_reason"] == "truncated"   # cut at 32,768, no </think>
    assert out.loc["math500_0017", "reject_reason"] == "too_long"    # 11,038 tokens
    kept = out[out["keep"]]
    assert len(kept) >= 12 and kept["correct"].all()
    # the reasoning curate split off is the authors' own split of the same output
    first = kept.loc["math500_0001"]
    assert first["reasoning"].strip() == raw.set_index("item_id").loc["math500_0001", "reasoning_trace"].strip()


def test_math500_decontamination_rejects_every_bundled_trace():
    rows = _generate_rows(load_prompts(PromptsConfig(**R1)))
    out = curate(rows, CurateConfig.model_validate({"decontam": {"benchmarks": ["math500"]}}))
    assert not out["keep"].any()
    # every row that passes the rules before decontamination is contaminated
    assert set(out["reject_reason"]) == {"contaminated", "truncated", "wrong_answer"}
    assert (out["reject_reason"] == "contaminated").sum() == 17


def test_separate_reasoning_and_answer_columns():
    cfg = {**R1, "traces": {"response_column": "answer_text", "reasoning_column": "reasoning_trace"}}
    rows = _generate_rows(load_prompts(PromptsConfig(**cfg)))
    assert set(rows["teacher"]) == {"byo"} and rows["completion_tokens"].isna().all()
    out = curate(rows, CurateConfig.model_validate({"decontam": {"enabled": False}}))
    raw = pd.read_json("tests/fixtures/r1traces/math500_r1_distill_qwen7b_pilot.jsonl", lines=True)
    closed = raw["reasoning_trace"] != ""   # one trace was cut inside its reasoning: all answer
    assert out.loc[closed, "reasoning"].tolist() == raw.loc[closed, "reasoning_trace"].tolist()
    assert out.loc[out["prompt_id"] == "math500_0001", "keep"].item()


def _openr1(path):
    """OpenR1-Math's shape: lists of generations and of math-verify verdicts, one per element."""
    think = "<think>{} plus {} is {}.</think>The answer is $\\boxed{{{}}}$."
    pd.DataFrame({
        "problem": ["What is 2 + 2?", "What is 3 + 3?", "What is 4 + 4?", "What is 5 + 5?"],
        "answer": ["4", "6", "8", "10"],
        "generations": [[think.format(2, 2, 4, 4), think.format(2, 2, 5, 5)],
                        [think.format(3, 3, 6, 6)],
                        [think.format(4, 4, 8, 8), think.format(4, 4, 8, 8)],
                        None],
        "correctness_math_verify": [[True, False], [True, True], [True, True], []],
    }).to_parquet(path)


def test_openr1_lists_give_one_trace_per_generation(tmp_path):
    _openr1(tmp_path / "openr1.parquet")
    prompts = load_prompts(PromptsConfig(source=str(tmp_path / "openr1.parquet"), traces={
        "response_column": "generations", "list_columns": ["correctness_math_verify"],
        "teacher": "DeepSeek-R1"}))
    reasons = prompts.set_index("problem")["reject_reason"]
    assert reasons["What is 3 + 3?"] == "list_length_mismatch"     # 1 generation, 2 verdicts
    assert reasons["What is 5 + 5?"] == "missing_response"
    rows = _generate_rows(prompts)
    assert rows["sample_index"].tolist() == [0, 1, 0, 1]
    # split element by element (a column mixing lists and booleans is stored as JSON text)
    verdicts = prompts.loc[prompts["keep"], "correctness_math_verify"].map(str).str.lower()
    assert verdicts.tolist() == ["true", "false", "true", "true"]
    out = curate(rows, CurateConfig.model_validate({"decontam": {"enabled": False},
                                                    "filters": {"too_short": {"min_tokens": 1}}}))
    assert out["reject_reason"].tolist() == [None, "wrong_answer", None, "duplicate_exact"]
    assert set(out["teacher"]) == {"DeepSeek-R1"}


def test_openthoughts_conversations_with_their_markers(tmp_path):
    answer = ("<|begin_of_thought|>\n\nSix times seven is 42.\n\n<|end_of_thought|>\n\n"
              "<|begin_of_solution|>\n\n$\\boxed{42}$\n\n<|end_of_solution|>")
    lines = [{"system": "You are a helpful assistant.",
              "conversations": [{"from": "user", "value": "What is 6 * 7?"},
                                {"from": "assistant", "value": answer}]},
             {"conversations": [{"from": "user", "value": "What is 1 * 7?"}]},
             {"conversations": "not a list"}]
    path = tmp_path / "openthoughts.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    prompts = load_prompts(PromptsConfig(source=str(path), answer_column=None, traces={
        "format": "conversations", "teacher": "DeepSeek-R1",
        "replace": {"<|begin_of_thought|>": "<think>", "<|end_of_thought|>": "</think>",
                    "<|begin_of_solution|>": "", "<|end_of_solution|>": ""}}))
    assert prompts["reject_reason"].tolist() == [None, "no_assistant_turn", "no_user_turn"]
    rows = _generate_rows(prompts)
    assert rows["problem"].tolist() == ["What is 6 * 7?"]
    out = curate(rows, CurateConfig.model_validate({"decontam": {"enabled": False},
                                                    "verify": {"method": "none"},
                                                    "filters": {"too_short": {"min_tokens": 1},
                                                                "wrong_answer": {"enabled": False}}}))
    assert out["reasoning"].item().strip() == "Six times seven is 42."
    assert out["final_answer"].item() == "42" and out["keep"].item()


def test_a_missing_trace_column_names_the_field_and_the_file(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_prompts(PromptsConfig(**{**R1, "traces": {"response_column": "output"}}))
    msg = str(err.value)
    assert "prompts.traces.response_column: column 'output' is not in bundled:r1_distill" in msg
    assert "full_response" in msg and "fix:" in msg


def test_a_response_that_is_not_text_is_rejected(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"problem": "a?", "answer": "1", "response": {"x": 1}}\n'
                    '{"problem": "b?", "answer": "2", "response": "<think>r</think>2"}\n'
                    '{"problem": "b?", "answer": "2", "response": "<think>s</think>2"}\n')
    prompts = load_prompts(PromptsConfig(source=str(path), traces={}))
    assert prompts["reject_reason"].tolist() == ["response_not_text", None, None]
    # two traces of one problem on two rows: samples 0 and 1, not a duplicate prompt
    assert prompts["sample_index"][0] == 0 and sorted(prompts["sample_index"][1:]) == [0, 1]


def test_a_tokenizer_counts_tokens_where_the_source_has_none(tmp_path, distill_home):
    from transformers import AutoTokenizer

    from distill.engines.models import resolve_model

    path = tmp_path / "t.jsonl"
    path.write_text('{"problem": "b?", "answer": "2", "response": "<think>one two</think>2"}\n')
    prompts = load_prompts(PromptsConfig(source=str(path), traces={"tokenizer": "tiny-llama"}))
    tok = AutoTokenizer.from_pretrained(resolve_model("tiny-llama"))
    expected = len(tok("<think>one two</think>2", add_special_tokens=False)["input_ids"])
    assert _generate_rows(prompts)["completion_tokens"].tolist() == [expected]


def test_plain_sources_are_curated_without_think_or_verification():
    """A reasoning source (R1 traces) and a plain one (V3-style answers, no <think>, no reference)
    in one curation: curate.plain_sources lets the plain rows through the answer rules, while the
    reasoning rows keep every rule; other rules still apply to plain rows."""
    r1 = _generate_rows(load_prompts(PromptsConfig(**R1))).head(4).assign(source="r1")
    plain = pd.DataFrame({
        "prompt_id": ["p/a", "p/b", "p/c", "p/d"],
        "problem": ["Write a haiku about rain.", "Say hello in French.", "Say hi.", "Say yes."],
        "reference": [None] * 4, "sample_index": [0] * 4,
        "request_id": ["p/a:0", "p/b:0", "p/c:0", "p/d:0"],
        "text": ["Soft rain on the roof, the garden drinks slowly, grey sky hums along.",
                 "Bonjour ! C'est ainsi que l'on dit bonjour en français.", "Hi.", ""],
        "source": "plain"})
    rows = pd.concat([r1, plain], ignore_index=True)
    cfg = {"decontam": {"enabled": False}, "filters": {"too_short": {"min_tokens": 3}}}
    out = curate(rows, CurateConfig.model_validate({**cfg, "plain_sources": ["plain"]}))
    by = out.set_index("request_id")
    assert by.loc["p/a:0", "keep"] and by.loc["p/b:0", "keep"]
    assert by.loc["p/a:0", "reasoning"] == "" and pd.isna(by.loc["p/a:0", "correct"])
    assert by.loc["p/c:0", "reject_reason"] == "too_short"        # other rules still apply
    assert by.loc["p/d:0", "reject_reason"] == "empty_response"   # nothing came back
    r1_alone = curate(r1, CurateConfig.model_validate(cfg)).set_index("request_id")
    assert by.loc[r1_alone.index, "reject_reason"].tolist() == r1_alone["reject_reason"].tolist()
    # without plain_sources the plain rows fail the reasoning rules
    strict = curate(rows, CurateConfig.model_validate(cfg)).set_index("request_id")
    assert not strict.loc[["p/a:0", "p/b:0"], "keep"].any()


def test_traces_of_one_problem_on_several_rows_are_numbered_by_content_not_file_order(tmp_path):
    rows = pd.DataFrame({"problem": ["What is 2 + 2?"] * 3 + ["What is 3 + 3?"],
                         "answer": ["4", "4", "4", "6"],
                         "response": ["<think>a</think>4", "<think>b</think>4", "<think>c</think>5",
                                      "<think>d</think>6"]})
    numbered = []
    for name, frame in (("in_order", rows), ("reversed", rows.iloc[::-1])):
        frame.to_json(tmp_path / f"{name}.jsonl", orient="records", lines=True)
        cfg = PromptsConfig(source=str(tmp_path / f"{name}.jsonl"),
                            traces={"response_column": "response"})
        out = _generate_rows(load_prompts(cfg))
        numbered.append(sorted(zip(out["prompt_id"], out["sample_index"], out["text"])))
    assert numbered[0] == numbered[1]
    assert sorted(i for p, i, _ in numbered[0] if p == numbered[0][0][0]) in ([0], [0, 1, 2])
