"""SFT rows to training examples: `prepare_examples(rows, cfg, tokenizer) -> Prepared`.

`rows` needs columns row_id, prompt, reasoning, answer_text. Each row becomes one chat example
(students.chat); rows longer than max_length are rejected with reason too_long_for_max_length
(or truncated, `overlong: truncate`). `BatchDataset` serves batches planned by students.packing.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from distill.pipeline.errors import DistillError
from distill.students.chat import build_examples
from distill.students.config import TrainConfig

REQUIRED_COLUMNS = ("row_id", "prompt", "reasoning", "answer_text")


@dataclass
class Prepared:
    """Tokenized examples of the kept rows, their row ids, the rejected rows with reasons."""

    data: list[dict]
    kept_row_ids: list
    rejected: pd.DataFrame
    truncated: int


def check_rows(rows: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise DistillError(f"train_student: rows lack columns {missing} (have {list(rows.columns)})",
                           fix="pass the curated SFT set (row_id, prompt, reasoning, answer_text)")
    if rows.empty:
        raise DistillError("train_student: no rows to train on",
                           fix="check the curation funnel: every trace was rejected")


def all_overlong(n: int, cfg: TrainConfig) -> DistillError:
    return DistillError(f"train_student: all {n} rows are longer than max_length "
                        f"{cfg.max_length} tokens", fix="raise max_length or set overlong: truncate")


def prepare_examples(rows: pd.DataFrame, cfg: TrainConfig, tokenizer, *,
                     allow_empty: bool = False) -> Prepared:
    """Tokenize every row; keep those that fit (or are truncated), reject the rest with reasons.
    `allow_empty`: one worker's shard may be empty or all overlong (the caller checks the sum)."""
    if allow_empty and rows.empty:
        return Prepared([], [], pd.DataFrame({"row_id": [], "reject_reason": []}), 0)
    check_rows(rows)
    examples = build_examples(tokenizer, rows["prompt"].tolist(), rows["reasoning"].tolist(),
                              rows["answer_text"].tolist(), think_format=cfg.think_format,
                              max_length=cfg.max_length, overlong=cfg.overlong)
    reasons = [e["reject_reason"] for e in examples]
    kept = [i for i, r in enumerate(reasons) if r is None]
    rejected = pd.DataFrame({"row_id": [rows["row_id"].iloc[i] for i, r in enumerate(reasons) if r],
                             "reject_reason": [r for r in reasons if r]})
    if not kept and not allow_empty:
        raise all_overlong(len(rows), cfg)
    return Prepared(data=[{"input_ids": examples[i]["input_ids"], "labels": examples[i]["labels"]}
                          for i in kept],
                    kept_row_ids=[rows["row_id"].iloc[i] for i in kept], rejected=rejected,
                    truncated=sum(examples[i]["truncated"] for i in kept))


class BatchDataset:
    """Dataset whose items are planned batches (lists of examples); DataLoader batch size 1."""

    def __init__(self, data: list[dict], plan: list[list[int]]):
        self.data, self.plan = data, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> list[dict]:
        return [self.data[j] for j in self.plan[i]]
