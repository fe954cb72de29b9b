"""A reference answer by majority: a prompt without one takes its samples' agreed answer.

    curate:
      verify:
        majority_reference: {enabled: true, min_agreement: 0.6}

For each prompt whose reference answer is missing, the final answers of the teacher's k samples
are grouped by math-verify equivalence (data.mathverify.group_equivalent, in the canonical row
order, so the groups do not depend on the order rows arrive in). When the largest group holds at
least `min_agreement` of the prompt's samples (all k, answered or not) and no other group is as
large, its first member (canonical order) becomes the prompt's reference, and its rows get
`reference_source` 'majority' (rows with a given reference: 'given') and `majority_agreement`.
Otherwise the prompt's rows are rejected as `no_reference`. NeMo-Skills does the same for
problems without answers. `majority_table` works on whole prompts (any subset of them), so the
one-process curate and the Ray path (a groupby on prompt_id) compute the same table.
"""
from __future__ import annotations

from collections import Counter
from functools import partial

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

COLUMNS = ["prompt_id", "majority_reference", "majority_agreement"]


class MajorityReferenceConfig(BaseModel):
    """Give a prompt without a reference answer its samples' majority answer."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="Take the majority answer of a prompt's samples as "
                          "its reference when it has none (reference_source 'majority').")
    min_agreement: float = Field(0.5, gt=0, le=1, description="Least share of the prompt's "
                                 "samples whose answers are equivalent to the majority answer; "
                                 "below it (or a tie) the rows are rejected as no_reference.")


def _text(answer: object) -> str | None:
    """The answer as a reference: an extracted answer as is, a whole answer text (WholeText) as
    the expression math-verify extracts from it."""
    from distill.data.mathverify import WholeText, present

    if not present(answer):
        return None
    if isinstance(answer, WholeText):
        from distill.data.mathverify import _parse

        parsed = _parse(answer)
        return str(parsed[-1]) if parsed and isinstance(parsed[-1], str) and parsed[-1].strip() else None
    return str(answer)


def majority_of(answers: list, timeout_s: float = 5.0) -> tuple[str | None, float]:
    """(majority answer, its share of all answers) for one prompt's answers in canonical order;
    (None, share) when the top groups tie or nothing was answered. Runs in a main thread."""
    from distill.data.mathverify import group_equivalent

    if not answers:
        return None, 0.0
    groups = group_equivalent(answers, timeout_s)
    counts = Counter(g for g in groups if g is not None).most_common()
    if not counts:
        return None, 0.0
    best, n = counts[0]
    share = n / len(answers)
    if len(counts) > 1 and counts[1][1] == n:
        return None, share
    return _text(answers[groups.index(best)]), share


def _one(item: list, timeout_s: float) -> tuple[str | None, float]:
    return majority_of(item, timeout_s)


def majority_table(rows: pd.DataFrame, order: pd.Series, *, timeout_s: float = 5.0,
                   workers: int = 0) -> pd.DataFrame:
    """COLUMNS for every prompt in `rows` (parsed rows of whole prompts, all without a reference:
    prompt_id, final_answer, answer_text), `order` their canonical order keys."""
    from distill.data.mathverify import WholeText, map_main_thread

    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(COLUMNS, (object, object, "float64"))})
    rows = rows.assign(_order=order.to_numpy()).sort_values(["prompt_id", "_order"], kind="stable")
    rows = rows.assign(_answer=[WholeText(a) if isinstance(a, str) and a == t else a  # as verify_frame
                                for a, t in zip(rows["final_answer"], rows["answer_text"])])
    prompts = list(rows.groupby("prompt_id", sort=True)["_answer"])
    found = map_main_thread(partial(_one, timeout_s=timeout_s), [list(a) for _, a in prompts],
                            workers=workers)
    return pd.DataFrame({"prompt_id": [p for p, _ in prompts],
                         "majority_reference": [f[0] for f in found],
                         "majority_agreement": [float(f[1]) for f in found]})


def apply_majority(rows: pd.DataFrame, table: pd.DataFrame | dict, min_agreement: float
                   ) -> tuple[pd.DataFrame, pd.Series]:
    """`rows` with `reference` filled from `table` where missing and agreed enough,
    `reference_source` ('given' / 'majority' / None) and `majority_agreement`; and the
    no_reference reason per row (None elsewhere)."""
    from distill.data.mathverify import present

    if isinstance(table, pd.DataFrame):
        table = {p: (r, a) for p, r, a in zip(table["prompt_id"], table["majority_reference"],
                                              table["majority_agreement"])}
    rows = rows.copy()
    given = rows["reference"].map(present)
    found = [table.get(p, (None, 0.0)) if not g else (None, float("nan"))
             for p, g in zip(rows["prompt_id"], given)]
    agreed = [not g and r is not None and a >= min_agreement - 1e-12
              for g, (r, a) in zip(given, found)]
    rows["reference"] = [r if ok else ref for ok, (r, _), ref in zip(agreed, found, rows["reference"])]
    rows["reference_source"] = ["given" if g else ("majority" if ok else None)
                                for g, ok in zip(given, agreed)]
    rows["majority_agreement"] = [a for _, a in found]
    reason = pd.Series([None if g or ok else "no_reference" for g, ok in zip(given, agreed)],
                       index=rows.index, dtype=object)
    return rows, reason
