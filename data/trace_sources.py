"""Trace sources (bring your own traces): a prompt source whose rows already hold answers.

    prompts:
      source: bundled:r1_distill_qwen7b_math500      # or a .jsonl / .parquet file
      problem_column: problem
      answer_column: ground_truth                    # the reference (null: none)
      id_column: item_id
      traces:
        response_column: full_response               # the whole output; curate splits <think>
        teacher: DeepSeek-R1-Distill-Qwen-7B
        completion_tokens_column: total_generated_tokens

With `prompts.traces` set, the prompts stage turns every row (every element, where the response
column holds lists) into one trace, and the generate stage asks no teacher for them: it writes
them as generate rows (`text`, `reasoning`, `finish_reason`, `completion_tokens`, `teacher`, cost
0) that curate and train read as if a teacher had written them. The stage keys hold the file's
content (prompts.source is fingerprinted) and these settings.

Columns (format `columns`):
- `response_column`: the output. With `reasoning_column` too, it is the answer after the
  reasoning (as an API's `content` beside `reasoning_content`); alone it is the whole output,
  `<think>R</think>A` or `R</think>A` (R1-Distill's template pre-fills `<think>`).
- A response column holding lists (OpenR1-Math's `generations`) gives one trace per element,
  `sample_index` its position; `list_columns` (e.g. `correctness_math_verify`) are split the same
  way and must hold lists of the same length (else the row is rejected `list_length_mismatch`).
- `teacher_column` (per row) or `teacher` (one name, default `byo`) tags each trace.
- `finish_reason_column`, `completion_tokens_column`: copied when given. Without a token column,
  `tokenizer` (a model name, folder or hub id) counts reasoning + answer tokens; without either the
  count stays empty and the length filters estimate it from words (data.filters).

Format `conversations` (OpenThoughts, ShareGPT): `conversations_column` holds a list of turns
`{from, value}` (or `{role, content}`); the first user/human turn is the problem (it fills
`problem_column`), the last assistant/gpt turn the response. `replace` rewrites markers in
responses first, e.g. OpenThoughts' `<|begin_of_thought|>` -> `<think>`.

Rows that cannot be traces are rejected by the prompts stage with a reason: `missing_response`,
`response_not_text`, `list_length_mismatch`, `no_user_turn`, `no_assistant_turn`.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.pipeline.errors import RecipeError
from distill.pipeline.keys import fingerprint

# The columns a trace source adds to the prompts stage's rows (generate reads them).
TEXT, REASONING, FINISH, TOKENS, TEACHER, REJECT = (
    "trace_text", "trace_reasoning", "trace_finish_reason", "trace_completion_tokens",
    "trace_teacher", "trace_reject")
USER_ROLES, ASSISTANT_ROLES = ("user", "human"), ("assistant", "gpt")


class TraceSourceConfig(BaseModel):
    """Which columns of a trace source hold the answers (see data.trace_sources)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["columns", "conversations"] = Field("columns", description=(
        "columns: the answer is in response_column (and reasoning_column); conversations: a "
        "list of chat turns in conversations_column (OpenThoughts, ShareGPT)."))
    response_column: str = Field("response", description=(
        "The output (a list: one trace per element). With reasoning_column: the answer after it."))
    reasoning_column: str | None = Field(None, description="Reasoning kept apart from the answer (null: none).")
    list_columns: list[str] = Field(default_factory=list, description=(
        "Columns split with a list response, element by element (e.g. correctness_math_verify)."))
    conversations_column: str = Field("conversations", description="The turns (format conversations).")
    replace: dict[str, str] = Field(default_factory=dict, description=(
        "Text replaced in responses before parsing, e.g. {'<|begin_of_thought|>': '<think>'}."))
    teacher: str = Field("byo", description="The name each trace is tagged with (the teacher column).")
    teacher_column: str | None = Field(None, description="A column naming each row's teacher instead.")
    finish_reason_column: str | None = Field(None, description="Finish reasons (stop, length), if the source has them.")
    completion_tokens_column: str | None = Field(None, description="Completion token counts, if the source has them.")
    tokenizer: str | None = Field(None, description=(
        "Count completion tokens with this model's tokenizer where the source has no counts "
        "(null: the filters estimate them from words)."), json_schema_extra=fingerprint("model"))


def _is_list(value: object) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _turns(value: object) -> list[tuple[str, object]]:
    """(role, text) of each turn of a conversation value; [] for anything else."""
    out = []
    for turn in value if _is_list(value) else []:
        if isinstance(turn, dict):
            role = turn.get("from", turn.get("role"))
            out.append((str(role).lower(), turn.get("value", turn.get("content"))))
    return out


def _from_conversations(table: pd.DataFrame, cfg: TraceSourceConfig, problem_column: str,
                        source: str, field: str) -> pd.DataFrame:
    column = cfg.conversations_column
    if column not in table.columns:
        raise RecipeError(f"{field}.conversations_column: column {column!r} is not in "
                          f"{source} (columns: {', '.join(map(str, table.columns))})",
                          fix=f"set {field}.conversations_column, or format: columns")
    problems, responses, reasons = [], [], []
    for value in table[column]:
        turns = _turns(value)
        user = next((t for r, t in turns if r in USER_ROLES), None)
        answer = next((t for r, t in reversed(turns) if r in ASSISTANT_ROLES), None)
        problems.append(user)
        responses.append(answer)
        reasons.append("no_user_turn" if user is None else "no_assistant_turn" if answer is None else None)
    out = table.copy()
    out[problem_column] = pd.Series(problems, dtype=object, index=table.index)
    out[TEXT] = pd.Series(responses, dtype=object, index=table.index)
    out[REJECT] = pd.Series(reasons, dtype=object, index=table.index)
    return out


def _explode(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per element of the list in TEXT (and in `columns`, element by element); a row
    whose lists differ in length stays whole, rejected `list_length_mismatch`."""
    if not table[TEXT].map(_is_list).any():
        return table
    rows = []
    for _, row in table.iterrows():
        value = row[TEXT]
        if not _is_list(value):
            rows.append(row)
            continue
        lengths = {len(row[c]) if _is_list(row[c]) else -1 for c in columns}
        if lengths - {len(value)}:
            rows.append(row.copy())
            rows[-1][TEXT] = None
            rows[-1][REJECT] = rows[-1][REJECT] or "list_length_mismatch"
            continue
        for i, element in enumerate(value):
            one = row.copy()
            one[TEXT] = element
            one["sample_index"] = i
            for c in columns:
                one[c] = row[c][i]
            rows.append(one)
    return pd.DataFrame(rows).reset_index(drop=True) if rows else table.iloc[:0]


def _rewrite(value: object, replace: dict[str, str]) -> object:
    if not isinstance(value, str):
        return value
    for old, new in replace.items():
        value = value.replace(old, new)
    return value


def expand_traces(table: pd.DataFrame, cfg: TraceSourceConfig, problem_column: str,
                  source: str, field: str = "prompts.traces") -> pd.DataFrame:
    """The source's rows as traces: TEXT, REASONING, FINISH, TOKENS, TEACHER, `sample_index`
    (the list position; empty where each row is one trace) and REJECT (a reason or None), beside
    the source's own columns. Raises RecipeError for a column the settings name but the file
    lacks."""
    if cfg.format == "conversations":
        table = _from_conversations(table, cfg, problem_column, source, field)
    else:
        needed = {f"{field}.response_column": cfg.response_column}
        for name in ("reasoning_column", "teacher_column", "finish_reason_column",
                     "completion_tokens_column"):
            needed[f"{field}.{name}"] = getattr(cfg, name)
        needed.update({f"{field}.list_columns[{i}]": c for i, c in enumerate(cfg.list_columns)})
        for key, column in needed.items():
            if column is not None and column not in table.columns:
                raise RecipeError(f"{key}: column {column!r} is not in {source} "
                                  f"(columns: {', '.join(map(str, table.columns))})",
                                  fix=f"set {key} to one of those columns")
        table = table.copy()
        table[TEXT] = table[cfg.response_column]
        table[REJECT] = None
    table["sample_index"] = np.nan
    table = _explode(table, cfg.list_columns)
    table[TEXT] = table[TEXT].map(lambda v: _rewrite(v, cfg.replace))
    reasoning = table[cfg.reasoning_column] if cfg.reasoning_column else pd.Series(None, index=table.index, dtype=object)
    table[REASONING] = reasoning.map(lambda v: _rewrite(v, cfg.replace))
    bad = table[TEXT].map(lambda v: v is not None and not isinstance(v, str) and not _missing(v))
    bad |= table[REASONING].map(lambda v: v is not None and not isinstance(v, str) and not _missing(v))
    missing = table[TEXT].map(_missing) & table[REASONING].map(_missing)
    reason = table[REJECT].where(table[REJECT].notna(), None)
    reason = reason.where(reason.notna() | ~bad, "response_not_text")
    reason = reason.where(reason.notna() | ~missing, "missing_response")
    table[REJECT] = reason.astype(object).where(reason.notna(), None)
    table.loc[bad, [TEXT, REASONING]] = None
    table[TEXT] = table[TEXT].map(lambda v: None if _missing(v) else v).astype(object)
    table[REASONING] = table[REASONING].map(lambda v: None if _missing(v) else v).astype(object)
    table[TEACHER] = (table[cfg.teacher_column].map(lambda v: cfg.teacher if _missing(v) else str(v))
                      if cfg.teacher_column else cfg.teacher)
    table[FINISH] = (table[cfg.finish_reason_column].map(lambda v: None if _missing(v) else str(v))
                     if cfg.finish_reason_column else None)
    tokens = (pd.to_numeric(table[cfg.completion_tokens_column], errors="coerce")
              if cfg.completion_tokens_column else pd.Series(np.nan, index=table.index))
    if cfg.tokenizer and tokens.isna().any():
        tokens = tokens.where(tokens.notna(), count_tokens(table, cfg.tokenizer))
    table[TOKENS] = tokens.astype(float)
    return table


def _missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def count_tokens(table: pd.DataFrame, model: str) -> pd.Series:
    """Tokens of reasoning + answer per row with `model`'s tokenizer (no special tokens)."""
    from transformers import AutoTokenizer

    from distill.engines.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(model))
    texts = [(r or "") + (t or "") for r, t in zip(table[REASONING], table[TEXT])]
    counts = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return pd.Series(counts, index=table.index, dtype=float)


def number_samples(out: pd.DataFrame) -> pd.Series:
    """`sample_index` of each trace: its list position, else its rank by content among the rows
    of its prompt (k traces of one problem on k rows get the same numbers in any file order)."""
    import xxhash

    listed = out["sample_index"]
    text = [f"{r}\0{t}".encode() for r, t in
            zip(out[REASONING].fillna("").astype(str), out[TEXT].fillna("").astype(str))]
    content = [xxhash.xxh3_64_hexdigest(t) for t in text]
    order = pd.DataFrame({"prompt_id": out["prompt_id"], "content": content}, index=out.index)
    ranked = order.sort_values(["prompt_id", "content"], kind="stable")
    rank = ranked.groupby("prompt_id").cumcount().reindex(out.index)
    return listed.where(listed.notna(), rank).astype("int64")


def split_given(prompts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prompts that need a teacher, rows that bring their own trace) of the prompts stage's rows."""
    if TEACHER not in prompts.columns:
        return prompts, prompts.iloc[:0]
    given = prompts[TEACHER].notna()
    return prompts[~given], prompts[given]


GENERATE_COLUMNS = ["prompt_id", "problem", "reference", "sample_index", "request_id",
                    "request_key", "text", "reasoning", "prompt_tokens", "completion_tokens",
                    "finish_reason", "error", "teacher", "cost", "reject_reason", "keep"]


def given_rows(given: pd.DataFrame) -> pd.DataFrame:
    """Generate-stage rows for traces a source brought: as a teacher's, cost 0, no error."""
    from distill.pipeline.keys import digest

    rows = pd.DataFrame({
        "prompt_id": given["prompt_id"].astype(str), "problem": given["problem"],
        "reference": given["reference"], "sample_index": given["sample_index"].astype("int64"),
    }).reset_index(drop=True)
    rows["request_id"] = rows["prompt_id"] + ":" + rows["sample_index"].astype(str)
    rows["text"] = given[TEXT].fillna("").to_numpy()
    rows["reasoning"] = given[REASONING].to_numpy()
    rows["request_key"] = [digest([r, t, s])[:24] for r, t, s in
                           zip(rows["request_id"], rows["text"], rows["reasoning"])]
    rows["prompt_tokens"] = pd.array([None] * len(rows), dtype="Int64")
    rows["completion_tokens"] = pd.array(given[TOKENS].round().to_numpy(), dtype="Int64")
    rows["finish_reason"] = given[FINISH].to_numpy()
    rows["error"] = None
    rows["teacher"] = given[TEACHER].to_numpy()
    rows["cost"] = 0.0
    rows["reject_reason"] = None
    rows["keep"] = True
    tags = [c for c in ("source", "kind") if c in given.columns]  # prompts.sources (data.sources)
    for c in tags:
        rows[c] = given[c].to_numpy()
    return rows[GENERATE_COLUMNS[:3] + tags + GENERATE_COLUMNS[3:]]
