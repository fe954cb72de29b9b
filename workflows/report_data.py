"""What the run report shows, as plain data: `report_data(store) -> dict`.

Read from the run's finished stages (a stage that has not run leaves its part out): the funnel
by stage and reason, the teacher's tokens, time and cost, trace lengths of kept and rejected
traces, the teacher's pass rate per prompt (and by level, subject or source where the prompts
have one), the training loss, the evaluation, and a few example traces per outcome.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from distill.pipeline.store import RunStore

ORDER = ("prompts", "select_prompts", "generate", "curate", "train", "evaluate", "publish")
GROUP_COLUMNS = ("level", "subject", "source", "type", "difficulty")
EXAMPLES_PER_OUTCOME = 2


def stages_in_order(store: RunStore) -> list[str]:
    done = store.stage_names()
    return [n for n in ORDER if n in done] + [n for n in done if n not in ORDER]


def funnel_rows(store: RunStore) -> list[dict]:
    """One row per (stage, outcome): in, each reject reason, kept, with counts."""
    rows = []
    for name in stages_in_order(store):
        m = store.stage(name).manifest
        rows.append({"stage": name, "outcome": "in", "rows": m.get("rows_in", 0)})
        for reason, n in sorted(m.get("rejected", {}).items(), key=lambda kv: -kv[1]):
            rows.append({"stage": name, "outcome": f"rejected: {reason}", "rows": n})
        rows.append({"stage": name, "outcome": "kept", "rows": m.get("kept", 0)})
    return rows


def eval_summary(store: RunStore) -> dict:
    """The evaluate manifest's results, paired and protocol ({} when it has not run)."""
    if "evaluate" not in store.stage_names():
        return {}
    m = store.stage("evaluate").manifest
    return {k: m.get(k, {}) for k in ("results", "paired", "protocol")}


def teacher_stats(store: RunStore) -> dict[str, Any]:
    """Tokens, time and cost of the teacher (the generate stage)."""
    if "generate" not in store.stage_names():
        return {}
    m = store.stage("generate").manifest
    seconds = m.get("seconds") or 0.0
    out_tokens = m.get("completion_tokens", 0)
    generated = m.get("generated_rows", m.get("rows_in", 0))
    return {"samples": m.get("rows_in", 0), "prompts": m.get("prompts"),
            "samples_per_prompt": m.get("samples_per_prompt"), "generated_now": generated,
            "from_cache": m.get("cached_rows", 0), "prompt_tokens": m.get("prompt_tokens", 0),
            "completion_tokens": out_tokens, "cost": m.get("cost", 0.0), "seconds": seconds,
            "tokens_per_second": out_tokens / seconds if seconds and generated else None,
            "finish_reasons": m.get("finish_reasons", {}),
            "reproducible": m.get("reproducible_sampling")}


def traces(store: RunStore) -> pd.DataFrame:
    """Every teacher trace that reached curation, with `outcome`: kept or the reject reason."""
    if "curate" not in store.stage_names():
        return pd.DataFrame(columns=["outcome", "completion_tokens"])
    cur = store.stage("curate")
    kept = cur.to_pandas().assign(outcome="kept")
    rejected = cur.to_pandas(rejected=True)
    rejected = rejected.assign(outcome=rejected.get("reject_reason", pd.Series(dtype=str)))
    frame = pd.concat([kept, rejected], ignore_index=True)
    if "sample_index" in frame:
        frame = frame.sort_values(["prompt_id", "sample_index"], kind="stable", ignore_index=True)
    return frame


def pass_rates(store: RunStore, rows: pd.DataFrame) -> pd.DataFrame | None:
    """Per prompt: samples with a verdict, correct ones, the rate, and its group (level, subject
    or source) where the prompts have one; None when the traces were not verified."""
    if "correct" not in rows or rows["correct"].notna().sum() == 0:
        return None
    judged = rows[rows["correct"].notna()]
    per = judged.groupby("prompt_id")["correct"].agg(samples="size", correct="sum").reset_index()
    per["rate"] = per["correct"] / per["samples"]
    if "prompts" in store.stage_names():
        prompts = store.stage("prompts").to_pandas()
        group = next((c for c in GROUP_COLUMNS if c in prompts), None)
        if group:
            per = per.merge(prompts[["prompt_id", group]].rename(columns={group: "group"}),
                            on="prompt_id", how="left")
            per.attrs["group"] = group
    return per


def training(store: RunStore) -> dict[str, Any]:
    """What training measured: steps, rows, tokens/s, seconds and the loss history."""
    if "train" not in store.stage_names():
        return {}
    m = store.stage("train").manifest
    metrics = m.get("metrics", {})
    return {"steps": metrics.get("global_step"), "rows": m.get("kept"), "method": m.get("method"),
            "tokens_per_second": metrics.get("tokens_per_second"), "seconds": m.get("seconds"),
            "loss": metrics.get("loss_history", [])}


def examples(rows: pd.DataFrame) -> list[dict]:
    """A few traces per outcome (kept first, then each reason), in (prompt, sample) order."""
    out = []
    for outcome in ["kept", *sorted(o for o in rows["outcome"].dropna().unique() if o != "kept")]:
        for _, r in rows[rows["outcome"] == outcome].head(EXAMPLES_PER_OUTCOME).iterrows():
            out.append({"outcome": outcome, "problem": str(r.get("problem", "")),
                        "reasoning": str(r.get("reasoning") or ""),
                        "answer": str(r.get("answer_text") if pd.notna(r.get("answer_text"))
                                      else r.get("text", "")),
                        "tokens": int(r.get("completion_tokens") or 0),
                        "reference": str(r.get("reference", ""))})
    return out


def report_data(store: RunStore) -> dict[str, Any]:
    """Everything the report shows (see the module docstring)."""
    rows = traces(store)
    return {"run": str(store.root), "stages": stages_in_order(store), "funnel": funnel_rows(store),
            "teacher": teacher_stats(store), "traces": rows, "pass_rates": pass_rates(store, rows),
            "training": training(store), "evaluation": eval_summary(store),
            "examples": examples(rows) if len(rows) else []}
