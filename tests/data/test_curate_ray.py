"""The curate stage's Ray Data path gives curate()'s output row for row, whatever the row order.

Each case writes traces as the generate stage does (Parquet), curates them with
data.curate_ray on a local 2-CPU Ray and with data.curate.curate in this process, and compares
the kept and rejected sets byte for byte after sorting by request_id.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from distill.data.curate import CurateConfig, curate
from distill.pipeline import accounting
from distill.pipeline.store import read_parquet_dir, write_parquet
from helpers import REPO
from tests.data.test_curate import LONG, _config, traces

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def ray_local():
    from distill.pipeline.cluster import ensure_ray

    ray = ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def r1_traces() -> pd.DataFrame:
    """The bundled R1-Distill traces (2 models x 20 MATH-500 problems) as generate's rows, plus
    an exact copy and a one-word edit of one trace (a near duplicate)."""
    files = sorted((REPO / "tests" / "fixtures" / "r1traces").glob("*.jsonl"))
    src = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
    tokens = src["total_generated_tokens"].astype(int)
    df = pd.DataFrame({"prompt_id": src["item_id"], "problem": src["problem"],
                       "sample_index": src["model_short_name"].factorize()[0],
                       "reference": src["ground_truth"].astype(str), "text": src["full_response"],
                       "reasoning": None, "completion_tokens": tokens,
                       "finish_reason": ["length" if t >= 32768 else "stop" for t in tokens]})
    words = df.loc[3, "text"].split(" ")
    words[len(words) // 2] = "CHANGED"
    extra = df.loc[[3, 3]].assign(sample_index=[2, 3]).reset_index(drop=True)
    extra.loc[1, "text"] = " ".join(words)
    df = pd.concat([df, extra], ignore_index=True)
    df["request_id"] = df["prompt_id"] + ":" + df["sample_index"].astype(str)
    return df


def synthetic() -> pd.DataFrame:
    """test_curate's traces (duplicates within prompts, one answer shared across prompts) plus
    a prompt asked twice, a near-duplicate long prompt, and reasoning repeated across prompts."""
    df = traces()
    long_q = "A train leaves the station at noon and travels " + LONG
    more = [("p-twice", "What is 11 + 11?", "22", "The answer is \\boxed{22}."),
            ("p-long", long_q, "7", LONG + " So \\boxed{7}."),
            ("p-long2", long_q.replace("noon", "dawn"), "7", "Thus \\boxed{7}."),
            ("p-copy", "Name a prime above 10.", "11", LONG + " The answer is \\boxed{11}.")]
    rows = [{"prompt_id": p, "sample_index": i, "request_id": f"{p}:{i}", "problem": q,
             "reference": a, "text": t, "completion_tokens": len(t.split())}
            for p, q, a, t in more for i in range(2)]
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True)


def _generate_dir(df: pd.DataFrame, folder: Path, files: int) -> Path:
    """df written as `files` Parquet files, as a generate stage's data/."""
    for i in range(files):
        write_parquet(df.iloc[i::files], folder / "data" / f"part-{i:05d}.parquet")
    return folder / "data"


def _sorted_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.sort_values("request_id").reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


def _check_equal(df: pd.DataFrame, cfg: CurateConfig, tmp: Path, *, files: int = 1, judge=None,
                 seed: int = 0) -> tuple[dict, Path]:
    """Ray's output over df (shuffled by seed) equals curate()'s, kept and rejected, byte for
    byte after sorting; returns the Ray counts and its output folder."""
    from distill.data.curate_ray import curate_on_ray

    shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    local = curate(df, cfg, judge=judge)
    local_counts = accounting.split_and_write(local, tmp / "local", len(local))
    out = tmp / f"ray{seed}"
    counts, extra = curate_on_ray(_generate_dir(shuffled, tmp / f"gen{seed}", files), cfg, out,
                                  judge=judge)
    assert counts == local_counts
    for part in ("data", "rejected"):
        ours, theirs = read_parquet_dir(out / part), read_parquet_dir(tmp / "local" / part)
        assert list(ours.columns) == list(theirs.columns), part
        assert _sorted_bytes(ours) == _sorted_bytes(theirs), part
    kept = local[local["keep"]]
    assert extra["prompts_with_kept_trace"] == kept["prompt_id"].nunique()
    assert extra["teacher_pass_rate"] == pytest.approx(local["correct"].eq(True).mean())
    return counts, out


def test_r1_fixture_traces_give_the_local_result(ray_local, tmp_path):
    cfg = CurateConfig.model_validate({  # MATH-500 problems: check them against other sets
        "decontam": {"benchmarks": ["aime24", "amc23", "gsm8k_test"]},
        "selection": {"max_per_prompt": 2}, "cluster": {"rows_per_part": 10}})
    counts, out = _check_equal(r1_traces(), cfg, tmp_path, files=2)
    assert {"duplicate_exact", "duplicate_near", "wrong_answer"} <= set(counts["rejected"])
    assert len(list((out / "data").glob("*.parquet"))) > 1       # parts written by workers


@pytest.mark.parametrize("case", ["across_prompts", "global_responses"])
def test_duplicates_and_row_order_give_the_local_result(ray_local, tmp_path, case):
    if case == "across_prompts":   # response dedupe in the parts, then a shuffle across them
        cfg = _config(verify={"method": "math", "workers": 1},
                      dedupe_across_prompts={"columns": ["text"], "min_chars": 100},
                      selection={"max_per_prompt": 2, "prefer": "shortest"})
    else:                          # response dedupe over all rows: a band-key shuffle
        cfg = _config(verify={"method": "math", "workers": 1}, dedupe_responses={"within": None},
                      selection={"max_per_prompt": 3, "pass_rate_max": 0.99})
        cfg.cluster.sort_shuffle_max_blocks = 0   # Ray's hash shuffle (large inputs) here
    cfg.cluster.rows_per_part = 6
    df = synthetic()
    df.loc[df["prompt_id"].isin(["p-add", "p-mul"]), "reference"] = "23"   # pass rate 0
    counts, first = _check_equal(df, cfg, tmp_path, files=3, seed=0)
    reasons = set(counts["rejected"])
    assert {"prompt_duplicate_exact", "prompt_duplicate_near", "duplicate_exact"} <= reasons
    assert ("cross_prompt_duplicate_exact" in reasons) == (case == "across_prompts")
    if case != "across_prompts":
        return
    _, again = _check_equal(df, cfg, tmp_path, files=2, seed=1)
    for part in ("data", "rejected"):   # the same files, whatever order the rows came in
        names = sorted(p.name for p in (first / part).glob("*.parquet"))
        assert len(names) > 1 and names == sorted(p.name for p in (again / part).glob("*.parquet"))
        assert all((first / part / n).read_bytes() == (again / part / n).read_bytes()
                   for n in names)


def test_judge_asks_once_per_undecided_row_and_agrees_with_local(ray_local, tmp_path):
    from distill.teachers.config import HttpEndpointConfig, TeacherConfig
    from distill.teachers.judge import teacher_judge
    from tests.teachers.http_server import Behaviour, ChatServer

    rows = [("p-it", "Capital of Italy?", "Rome", "It is \\boxed{\\text{Milan}}."),
            ("p-ap", "How many apples?", "ten apples", "\\boxed{\\text{Ten Apples}}"),
            ("p-add", "What is 2 plus 2?", "4", "\\boxed{4}")]
    df = pd.DataFrame([{"prompt_id": p, "sample_index": 0, "request_id": f"{p}:0", "problem": q,
                        "reference": a, "text": t} for p, q, a, t in rows])
    cfg = _config(verify={"method": "judge", "workers": 1,
                          "judge": {"applies_to": "undecided_and_wrong"}},
                  filters={"wrong_answer": {"enabled": True}, "too_short": {"min_tokens": 1}})
    with ChatServer(default=Behaviour(mode="judge")) as srv:
        judge = teacher_judge(TeacherConfig(backend="openai", model="judge", endpoint=
                                            HttpEndpointConfig(base_url=srv.base_url,
                                                               max_retries=0)), seed=0)
        counts, _ = _check_equal(df, cfg, tmp_path, judge=judge)
        assert len(srv.received) == 2 * 2     # Milan and Ten Apples, by each path
    assert counts["kept"] == 2 and counts["rejected"] == {"wrong_answer": 1}


def test_missing_columns_fail_before_any_task(ray_local, tmp_path):
    from distill.data.curate_ray import curate_on_ray
    from distill.pipeline.errors import DistillError

    data = _generate_dir(traces().drop(columns="reference"), tmp_path / "gen", 1)
    with pytest.raises(DistillError, match="(?s)curate: column 'reference'.*fix: curate reads"):
        curate_on_ray(data, _config(), tmp_path / "out")
    data = _generate_dir(traces(), tmp_path / "gen2", 1)
    with pytest.raises(DistillError, match="(?s)dedupe: column 'answer'.*fix: "):
        curate_on_ray(data, _config(dedupe_responses={"columns": ["answer"]}), tmp_path / "out")


def test_a_decontamination_file_missing_names_itself(ray_local, tmp_path):
    """The eval problems are read by the driver, before any task: the error names the file and
    its fix, as it is."""
    from distill.data.curate_ray import curate_on_ray
    from distill.pipeline.errors import RecipeError

    data = _generate_dir(traces(), tmp_path / "gen", 1)
    cfg = _config(decontam={"enabled": True, "benchmarks": [],
                            "extra_paths": [str(tmp_path / "absent.jsonl")]})
    with pytest.raises(RecipeError, match="(?s)extra_paths: .*absent.jsonl does not exist.*fix: "):
        curate_on_ray(data, cfg, tmp_path / "out")


def test_no_traces_give_empty_parts(ray_local, tmp_path):
    from distill.data.curate_ray import curate_on_ray

    data = _generate_dir(traces().iloc[:0], tmp_path / "gen", 1)
    counts, extra = curate_on_ray(data, _config(), tmp_path / "out")
    assert counts == {"rows_in": 0, "kept": 0, "rejected": {}}
    for part in ("data", "rejected"):
        assert [p.name for p in (tmp_path / "out" / part).iterdir()] == ["part-00000.parquet"]


def test_majority_references_on_ray_give_the_local_result(ray_local, tmp_path):
    from tests.data.test_majority import majority_config, majority_traces

    cfg = majority_config()
    cfg.cluster.rows_per_part = 4
    counts, out = _check_equal(majority_traces(), cfg, tmp_path, files=3, seed=3)
    assert counts["rejected"] == {"no_reference": 7, "wrong_answer": 2}
    kept = read_parquet_dir(out / "data")
    assert set(kept["reference_source"]) == {"majority", "given"}
