"""The run store and row accounting: manifest last, atomic files, rows in = kept + rejected."""
from __future__ import annotations

import pandas as pd
import pytest

from distill.pipeline import accounting
from distill.pipeline.errors import DistillError
from distill.pipeline.store import RunStore, open_run, read_parquet_dir, write_json


def test_split_and_write_accounts_for_every_row(tmp_path):
    rows = pd.DataFrame({"x": range(5)})
    flagged = accounting.flag(rows, pd.Series([None, "a", None, "b", "a"], dtype=object))
    counts = accounting.split_and_write(flagged, tmp_path, rows_in=5)
    assert counts == {"rows_in": 5, "kept": 2, "rejected": {"a": 2, "b": 1}}
    kept = read_parquet_dir(tmp_path / "data")
    rejected = read_parquet_dir(tmp_path / "rejected")
    assert kept["x"].tolist() == [0, 2]
    assert sorted(rejected["reject_reason"]) == ["a", "a", "b"]


def test_accounting_refuses_lost_rows(tmp_path):
    rows = accounting.flag(pd.DataFrame({"x": range(3)}), pd.Series([None] * 3, dtype=object))
    with pytest.raises(AssertionError, match="accounting"):
        accounting.split_and_write(rows, tmp_path, rows_in=4)


def test_combine_reasons_keeps_first():
    a = pd.Series([None, "r1", None], dtype=object)
    b = pd.Series(["r2", "r3", None], dtype=object)
    assert accounting.combine_reasons(a, b).tolist() == ["r2", "r1", None]


def test_temporary_files_are_invisible(tmp_path):
    (tmp_path / "data").mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "data" / "part-0.parquet")
    (tmp_path / "data" / ".part-1.parquet.abc.tmp").write_bytes(b"half a file")
    assert read_parquet_dir(tmp_path / "data")["x"].tolist() == [1]


def test_stage_is_done_only_with_manifest(tmp_path):
    store = RunStore(tmp_path)
    folder = store.stage_dir("curate", "abc123")
    folder.mkdir(parents=True)
    assert not store.is_done("curate", "abc123")
    write_json(folder / "manifest.json", {"key": "abc123", "rows_in": 0})
    assert store.is_done("curate", "abc123")
    store.record("curate", "abc123", "r", {})
    assert open_run(tmp_path).stage("curate").key == "abc123"


def test_open_run_errors_name_the_fix(tmp_path):
    with pytest.raises(DistillError, match="not a distill run directory"):
        open_run(tmp_path)
    store = RunStore(tmp_path)
    store.record("prompts", "k" * 12, "r", {})
    with pytest.raises(DistillError, match="stage 'curate' has no finished output"):
        store.stage("curate")


def test_combine_reasons_aligns_a_rule_run_over_survivors_only():
    first = pd.Series([None, "r1", None, None], index=[10, 11, 12, 13], dtype=object)
    survivors_only = pd.Series(["dup", None], index=[13, 10], dtype=object)
    assert accounting.combine_reasons(first, survivors_only).tolist() == [None, "r1", None, "dup"]


def _finish(store: RunStore, name: str, key: str, inputs: dict) -> None:
    write_json(store.stage_dir(name, key) / "manifest.json", {"key": key, "inputs": inputs})
    store.record(name, key, "r", inputs)


def test_the_run_view_is_one_consistent_chain_after_a_failed_rerun(tmp_path):
    """A re-run that finished a new prompts stage and then failed must not show the new prompts
    beside the old generate/curate (made from other prompts): those leave the view."""
    store = RunStore(tmp_path)
    _finish(store, "prompts", "p1", {})
    _finish(store, "generate", "g1", {"prompts": "p1"})
    _finish(store, "curate", "c1", {"generate": "g1"})
    assert sorted(store.stage_names()) == ["curate", "generate", "prompts"]
    _finish(store, "prompts", "p2", {})          # the edited prompt file; generate then failed
    run = open_run(tmp_path)
    assert run.stage_names() == ["prompts"] and run.stage("prompts").key == "p2"
    with pytest.raises(DistillError, match="stage 'generate' has no finished output"):
        run.stage("generate")
    _finish(store, "prompts", "p1", {})          # back to the old prompts: the old chain is
    _finish(store, "generate", "g1", {"prompts": "p1"})  # found done again and re-listed
    assert run.stage("generate").key == "g1"
    assert (tmp_path / "curate-c1").exists()     # folders are never deleted by the view
