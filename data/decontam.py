"""Benchmark decontamination: flag training rows that share word n-grams with eval problems.

    cfg = DecontamConfig()                      # MATH-500, AIME 2024, AMC 2023, GSM8K test
    index = build_index(cfg)                    # reusable; pickles, or index.save(path) / load
    reasons = flag_contaminated(df, cfg, index=index)        # "contaminated" or None per row
    sources = contamination_sources(df, cfg, index=index)    # "math500", "aime24,amc23", None

Normalisation, the same on both sides: lowercase; LaTeX that only formats is dropped (\\left,
\\right, \\displaystyle, \\textstyle, spacing commands \\, \\; \\: \\! \\quad \\qquad) and
\\dfrac/\\tfrac read as \\frac; then every run of characters that are not letters or digits
(punctuation, $, braces, ^, _, backslashes) becomes one space. So "$\\dfrac{1}{2}$" and
"\\frac 1 2" are both "frac 1 2", and the words of "x^2+1" are "x 2 1".

A row is contaminated by a benchmark problem when they share at least `min_overlap` distinct
word `ngram`-grams and those cover at least `min_coverage` of the problem's n-grams (the row holds
most of the problem). A row or problem with fewer than `ngram` words is one "n-gram": its whole
normalised text, so a short row matches a short problem with the same words.

Why coverage: MATH's 5,000 test problems contain MATH-500. With any shared 8-gram (min_coverage
0, open-r1's rule) all 500 are flagged and so are 504 of the other 4,500 (11%), mostly through
boilerplate ("express your answer as a common fraction", "find the sum of all possible values
of", Asymptote label code). With min_coverage 0.5 the 500 are still all flagged (each covers
100%) and 43 others are: problems that share most of their statement with a MATH-500 problem
(same stem, other question or other numbers), which we prefer to drop.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distill.data.benchmarks import BENCHMARKS, load_benchmark
from distill.data.minhash import ngram_hashes, text_buffer, word_hashes
from distill.pipeline.keys import fingerprint
from pydantic import BaseModel, ConfigDict, Field, field_validator

REASON = "contaminated"
_NORMALISE_VERSION = 1   # bump when normalisation changes: saved indexes then refuse to load
_ROWS_PER_CHUNK = 50_000


class DecontamConfig(BaseModel):
    """Which benchmarks to check training problems against, and how strictly."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Flag rows that overlap a benchmark problem.")
    benchmarks: list[str] = Field(
        default_factory=lambda: ["math500", "aime24", "amc23", "gsm8k_test"],
        description=f"Bundled benchmarks (data.benchmarks): any of {sorted(BENCHMARKS)}.", json_schema_extra=fingerprint("bundled_benchmarks"))
    extra_paths: list[str] = Field(
        default_factory=list, description="More eval sets: JSONL or Parquet files with a "
        "`problem` column; each is a source named after its file.", json_schema_extra=fingerprint("files"))
    ngram: int = Field(8, ge=1, le=64, description="Words per n-gram after normalisation.")
    min_overlap: int = Field(1, ge=1, description="Distinct n-grams a row must share with one "
                             "problem (a problem with fewer n-grams needs all of them).")
    min_coverage: float = Field(0.5, ge=0.0, le=1.0, description="Share of that problem's "
                                "n-grams the row must contain; 0 flags any shared n-gram.")

    @field_validator("benchmarks")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmarks {unknown}; bundled: {sorted(BENCHMARKS)} "
                             "(put other eval sets in extra_paths)")
        return names


@dataclass
class DecontamIndex:
    """Sorted unique n-gram hashes of the benchmark problems and, per hash, the problems that
    have it (CSR: problems[ptr[i]:ptr[i+1]])."""

    ngram: int
    names: list[str]                   # source names; source s is bit s
    hashes: np.ndarray                 # (k,) uint64, sorted
    ptr: np.ndarray                    # (k+1,) int64
    problems: np.ndarray               # problem numbers
    problem_ngrams: np.ndarray         # distinct n-grams per problem
    problem_source: np.ndarray         # source number per problem
    problem_ids: np.ndarray            # the benchmark's id (or row number) per problem
    version: int = field(default=_NORMALISE_VERSION)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps(self))

    @staticmethod
    def load(path: str | Path) -> DecontamIndex:
        index = pickle.loads(Path(path).read_bytes())
        if not isinstance(index, DecontamIndex) or index.version != _NORMALISE_VERSION:
            raise ValueError(f"{path}: not a decontamination index of this version; rebuild it "
                             "with data.decontam.build_index")
        return index


def normalize(texts: Any) -> Any:
    """The normalised texts (a pyarrow array): see the module docstring."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(list(texts) if not isinstance(texts, (pa.Array, pd.Series)) else texts,
                   type=pa.large_string(), from_pandas=True)
    arr = pc.utf8_lower(arr.fill_null(""))
    arr = pc.replace_substring_regex(
        arr, r"\\(?:left|right|displaystyle|textstyle|q?quad)\b|\\[,;:!]", " ")
    arr = pc.replace_substring_regex(arr, r"\\[dt]frac\b", r"\\frac")
    return pc.replace_substring_regex(arr, r"[^\p{L}\p{N}]+", " ")


def _ngrams(texts: Any, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct (text, n-gram hash) pairs as two arrays) of the normalised texts."""
    data, off = text_buffer(normalize(texts))
    tok, tok_off = word_hashes(data, off)
    h, h_off = ngram_hashes(tok, tok_off, ngram)
    doc, h, _ = _distinct(np.repeat(np.arange(len(off) - 1), np.diff(h_off)), h)
    return doc, h


def _distinct(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs, sorted, with how often each occurs."""
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    new = np.ones(len(a), dtype=bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(new)
    return a[starts], b[starts], np.diff(np.append(starts, len(a)))


def _read_problems(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"DecontamConfig.extra_paths: {path} does not exist (give a JSONL "
                                "or Parquet file with a `problem` column)")
    df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, lines=True)
    if "problem" not in df.columns:
        raise ValueError(f"DecontamConfig.extra_paths: {path} has no `problem` column "
                         f"(columns: {list(df.columns)})")
    return df


def build_index(cfg: DecontamConfig) -> DecontamIndex:
    """The n-gram index of cfg's benchmarks and extra files."""
    sets = [(name, load_benchmark(name)) for name in cfg.benchmarks]
    sets += [(Path(p).name, _read_problems(p)) for p in cfg.extra_paths]
    docs, hashes, source, ids = [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)], [], []
    for s, (_, df) in enumerate(sets):
        doc, h = _ngrams(df["problem"], cfg.ngram)
        docs.append(doc + len(source))
        hashes.append(h)
        source += [s] * len(df)
        ids += (df["id"].astype(str) if "id" in df.columns else df.index.astype(str)).tolist()
    doc, h = np.concatenate(docs), np.concatenate(hashes)
    order = np.argsort(h, kind="stable")
    uniq, first = np.unique(h[order], return_index=True)
    return DecontamIndex(
        ngram=cfg.ngram, names=[name for name, _ in sets], hashes=uniq,
        ptr=np.append(first, len(h)).astype(np.int64), problems=doc[order],
        problem_ngrams=np.bincount(doc, minlength=len(source)),
        problem_source=np.array(source, dtype=np.int64), problem_ids=np.array(ids, dtype=object))


def _match(texts: Any, cfg: DecontamConfig, index: DecontamIndex) -> pd.DataFrame:
    """(row, problem, shared) for every (row position, problem) pair that meets the rule."""
    if index.ngram != cfg.ngram:
        raise ValueError(f"index built with ngram={index.ngram}, config has ngram={cfg.ngram}; "
                         "rebuild the index with this config")
    doc, h = _ngrams(texts, cfg.ngram)
    pos = np.searchsorted(index.hashes, h)
    hit = pos < len(index.hashes)
    hit[hit] = index.hashes[pos[hit]] == h[hit]
    doc, pos = doc[hit], pos[hit]
    n_owners = index.ptr[pos + 1] - index.ptr[pos]
    run = np.repeat(index.ptr[pos] - np.cumsum(n_owners) + n_owners, n_owners)
    problem = index.problems[run + np.arange(len(run))]
    row, problem, shared = _distinct(np.repeat(doc, n_owners), problem)
    total = index.problem_ngrams[problem]
    ok = (shared >= np.minimum(cfg.min_overlap, total)) & (shared >= cfg.min_coverage * total)
    return pd.DataFrame({"row": row[ok], "problem": problem[ok], "shared": shared[ok]})


def _scan(df: pd.DataFrame, cfg: DecontamConfig, column: str,
          index: DecontamIndex | None) -> tuple[pd.DataFrame, DecontamIndex | None]:
    """All matches of df's rows (by position), chunk by chunk, and the index used."""
    if column not in df.columns:
        raise ValueError(f"decontamination column {column!r} is not in the data (columns: "
                         f"{list(df.columns)})")
    if not cfg.enabled or df.empty:
        return pd.DataFrame({"row": [], "problem": [], "shared": []}, dtype=np.int64), index
    index = index if index is not None else build_index(cfg)
    parts = [_match(df[column].iloc[start: start + _ROWS_PER_CHUNK], cfg, index)
             .assign(row=lambda m, s=start: m["row"] + s)
             for start in range(0, len(df), _ROWS_PER_CHUNK)]
    return pd.concat(parts, ignore_index=True), index


def contamination_matches(df: pd.DataFrame, cfg: DecontamConfig, *, column: str = "problem",
                          index: DecontamIndex | None = None) -> pd.DataFrame:
    """One line per (row, benchmark problem) match: row (df's index label), source,
    benchmark_id, shared (n-grams) and coverage (share of the problem's n-grams)."""
    m, index = _scan(df, cfg, column, index)
    if index is None or m.empty:
        return pd.DataFrame(columns=["row", "source", "benchmark_id", "shared", "coverage"])
    problem = m["problem"].to_numpy()
    return pd.DataFrame({
        "row": df.index[m["row"].to_numpy()],
        "source": np.array(index.names, dtype=object)[index.problem_source[problem]],
        "benchmark_id": index.problem_ids[problem],
        "shared": m["shared"].to_numpy(),
        "coverage": m["shared"].to_numpy() / index.problem_ngrams[problem]})


def flag_contaminated(df: pd.DataFrame, cfg: DecontamConfig, *, column: str = "problem",
                      index: DecontamIndex | None = None) -> pd.Series:
    """"contaminated" where the row's `column` holds a benchmark problem, else None."""
    m, _ = _scan(df, cfg, column, index)
    flagged = np.zeros(len(df), dtype=bool)
    flagged[m["row"].to_numpy()] = True
    return pd.Series(np.where(flagged, REASON, None), index=df.index, dtype=object,
                     name="decontam_reason")


def contamination_sources(df: pd.DataFrame, cfg: DecontamConfig, *, column: str = "problem",
                          index: DecontamIndex | None = None) -> pd.Series:
    """Comma-joined names of the benchmarks whose problems a row holds, None for clean rows."""
    m, index = _scan(df, cfg, column, index)
    out = np.full(len(df), None, dtype=object)
    if index is not None and not m.empty:
        m = m.assign(source=np.array(index.names, dtype=object)[
            index.problem_source[m["problem"].to_numpy()]])
        names = m.drop_duplicates(["row", "source"]).groupby("row")["source"].agg(",".join)
        out[names.index.to_numpy()] = names.to_numpy()
    return pd.Series(out, index=df.index, dtype=object, name="decontam_source")
