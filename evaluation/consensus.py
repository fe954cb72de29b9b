"""cons@n: a majority vote over the samples' answers, equivalent answers counted together.

    rows["answer_group"] = answer_groups(rows)      # per question, math-verify equivalence
    consensus_correct(rows_of_one_question)         # True when the winning group is correct

Every sample with an answer votes (an extracted answer or, for a model that does not box, its
whole answer part); samples without one (unfinished reasoning, cut at the token limit) do not.
Answers are grouped per question with math-verify (data.mathverify.group_equivalent, in sample
order: `0.5`, `\\frac{1}{2}` and `1/2` are one group). TIE_RULE says which group wins.
"""
from __future__ import annotations

from functools import partial

import pandas as pd

TIE_RULE = ("majority over math-verify-equivalent answers; a tie goes to the group answered "
            "first (lowest sample index); the group's first answer decides correctness; no "
            "answers: wrong")


def answer_groups(rows: pd.DataFrame, *, timeout_s: float = 5.0, workers: int = 0) -> pd.Series:
    """Group id per row (None without an answer), equivalent answers of one question sharing
    an id; ids count from 0 per question in sample order. Needs benchmark, question_id,
    sample_idx, answer, answer_is_text (evaluation.protocol.find_answers)."""
    from distill.data.mathverify import IN_PROCESS_MAX, group_equivalent, map_main_thread
    from distill.evaluation.protocol import as_answer

    order = rows.sort_values(["benchmark", "question_id", "sample_idx"], kind="stable")
    keys, items = [], []
    for _, q in order.groupby(["benchmark", "question_id"], sort=False):
        keys.append(q.index)
        items.append([as_answer(a, t) for a, t in zip(q["answer"], q["answer_is_text"])])
    per_item = max((len(i) for i in items), default=1)
    groups = map_main_thread(partial(group_equivalent, timeout_s=timeout_s), items,
                             workers=workers, in_process_max=max(1, IN_PROCESS_MAX // per_item))
    labels = [label for index in keys for label in index]
    ids = [g for per_question in groups for g in per_question]
    return pd.Series(ids, index=labels, dtype=object).reindex(rows.index)


def consensus_correct(question: pd.DataFrame) -> bool:
    """cons@n for one question's rows (answer_group, sample_idx, correct), by TIE_RULE."""
    votes = question[question["answer_group"].notna()].sort_values("sample_idx", kind="stable")
    if votes.empty:
        return False
    counts = votes.groupby("answer_group", sort=False).size()  # first-seen order
    winner = counts.index[int(counts.to_numpy().argmax())]     # argmax: first of the ties
    first = votes.loc[votes["answer_group"] == winner, "correct"].iloc[0]
    return bool(first) if pd.notna(first) else False
