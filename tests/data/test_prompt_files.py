"""Prompt files as users have them: empty, malformed, not UTF-8, and with values that are not
text. Each is a message naming the file, line or column and the fix, or a rejected row with its
reason; never a traceback, and never a silent conversion of a list into "[1 2]"."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.data.prompts import load_prompts
from distill.pipeline.errors import RecipeError
from distill.workflows.recipe import PromptsConfig


def _load(path, **cfg) -> pd.DataFrame:
    return load_prompts(PromptsConfig(source=str(path), **cfg))


def _error(path, **cfg) -> str:
    with pytest.raises(RecipeError) as err:
        _load(path, **cfg)
    return str(err.value)


@pytest.mark.parametrize("name", ["empty.jsonl", "blank.jsonl", "empty.json", "norows.parquet"])
def test_an_empty_file_is_reported_as_empty(tmp_path, name):
    path = tmp_path / name
    if name == "norows.parquet":
        pd.DataFrame({"problem": pd.Series([], dtype=str), "answer": pd.Series([], dtype=str)}
                     ).to_parquet(path)
    else:
        path.write_text({"empty.jsonl": "", "blank.jsonl": "\n\n", "empty.json": "[]"}[name])
    msg = _error(path)
    assert f"the file {path} is empty" in msg and "fix:" in msg
    assert "column" not in msg


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_malformed_json_line_is_reported_by_line_number(tmp_path, suffix):
    text = ('{"problem": "1+1", "answer": "2"}\n\n{"problem": "2+2", "answer": "4"}\n'
            '{"problem": "3+3", answer: 6}\n')
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    msg = _error(path)
    assert str(path) in msg and "line 4, column 20" in msg and "position" not in msg
    assert "each line holds one JSON object" in msg


def test_a_line_that_is_not_an_object_and_a_json_array_by_line(tmp_path):
    (tmp_path / "list.jsonl").write_text('{"problem": "a", "answer": "1"}\n[1, 2]\n')
    assert "line 2: a JSON object" in _error(tmp_path / "list.jsonl")
    (tmp_path / "bad.json").write_text('[\n  {"problem": "a", "answer": "1"},\n'
                                       '  {"problem": }\n]\n')
    assert "line 3, column 15" in _error(tmp_path / "bad.json")


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    text = '{"problem": "a", "answer": "1"}\n{"problem": "café", "answer": "2"}\n'
    path.write_bytes(text.encode("latin-1"))
    msg = _error(path)
    assert str(path) in msg and "line 2: not UTF-8" in msg and "save the file as UTF-8" in msg


def test_a_parquet_text_column_with_invalid_utf8_names_column_and_row(tmp_path):
    path = tmp_path / "p.parquet"
    table = pa.table({"problem": ["fine", "MARKERMARK", "also fine"], "answer": ["1", "2", "3"]})
    pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False)
    raw = path.read_bytes()
    assert raw.count(b"MARKERMARK") == 1
    path.write_bytes(raw.replace(b"MARKERMARK", b"MARK\xff\xfeMARK"))  # same length, not UTF-8
    msg = _error(path)
    assert str(path) in msg and "column 'problem', row 1 holds text that is not valid UTF-8" in msg
    assert "re-encode that column as UTF-8" in msg


def test_a_folder_or_unreadable_file_is_a_message(tmp_path):
    (tmp_path / "prompts.jsonl").mkdir()
    msg = _error(tmp_path / "prompts.jsonl")
    assert "cannot read" in msg and "prompts.jsonl" in msg


def test_problems_that_are_not_text_are_rejected_not_stringified(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([
        '{"problem": "What is 1+1?", "answer": 2}',
        '{"problem": 5, "answer": "5"}',
        '{"problem": [1, 2], "answer": "3"}',
        '{"problem": {"a": 1}, "answer": "1"}',
        '{"problem": true, "answer": "1"}',
        '{"problem": "What is 5/2?", "answer": 2.5}',
        '{"problem": "Name them.", "answer": ["x", "y"]}',
        '{"problem": "What is 3+3?", "answer": null}',
    ]) + "\n")
    rows = _load(path)
    assert rows["reject_reason"].tolist() == [
        None, "problem_not_text", "problem_not_text", "problem_not_text", "problem_not_text",
        None, "reference_not_text", "missing_reference"]
    assert rows["problem"].tolist()[1:5] == ["5", "[1, 2]", '{"a": 1}', "true"]  # shown as JSON
    # numeric references are their text; 2 stays "2" though pandas read the column as floats
    assert rows["reference"].tolist()[:1] + rows["reference"].tolist()[5:6] == ["2", "2.5"]
    pa.Table.from_pandas(rows)  # one type per column: the rows go to Parquet as they are


def test_parquet_list_problems_are_rejected(tmp_path):
    path = tmp_path / "lists.parquet"
    pd.DataFrame({"problem": [np.array([1, 2]), np.array([3])], "answer": [1, 2]}).to_parquet(path)
    rows = _load(path)
    assert rows["reject_reason"].tolist() == ["problem_not_text"] * 2
    assert rows["problem"].tolist() == ["[1, 2]", "[3]"]
    assert rows["reference"].tolist() == ["1", "2"]
