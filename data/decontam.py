"""Benchmark decontamination: flag training rows that share word n-grams with eval problems.

    cfg = DecontamConfig()                      # MATH-500, AIME 2024, AMC 2023, GSM8K test
    index = build_index(cfg)                    # reusable; pickles, or index.save(path) / load
    reasons = flag_contaminated(df, cfg, index=index)        # "contaminated" or None per row
    sources = contamination_sources(df, cfg, index=index)    # "math500", "aime24,amc23", None

Both sides are read as words the same way (data.decontam_words: LaTeX that only formats
dropped, operators kept as words, "42 \\times 55" and "42*55" alike, "42 * 55" not "42 + 55").
A row is contaminated by a benchmark problem when they share at least `min_overlap` distinct
word `ngram`-grams and those cover at least `min_coverage` of the problem's n-grams (the row holds
most of the problem). A problem with fewer than `ngram` words (a short one) is contained when its
whole normalised word sequence occurs in the row, anywhere, as consecutive words: a sentence
added before or after it does not hide it (its one "n-gram", coverage 1.0).

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
from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.data.benchmarks import BENCHMARKS, load_benchmark
from distill.data.columns import require_columns
from distill.data.decontam_words import extend, lookup, sequence_hashes, words
from distill.data.minhash import ngram_hashes
from distill.pipeline.errors import DistillError, RecipeError
from distill.pipeline.keys import fingerprint

REASON = "contaminated"
_NORMALISE_VERSION = 2   # bump when normalisation changes: saved indexes then refuse to load
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
    short_lengths: np.ndarray          # short problems (< ngram words): words, sorted
    short_hashes: np.ndarray           # their word-sequence hashes, sorted within a length
    short_problems: np.ndarray         # their problem numbers
    short_first: np.ndarray            # the distinct first words of short problems, sorted
    version: int = field(default=_NORMALISE_VERSION)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps(self))

    @staticmethod
    def load(path: str | Path) -> DecontamIndex:
        index = pickle.loads(Path(path).read_bytes())
        if not isinstance(index, DecontamIndex) or index.version != _NORMALISE_VERSION:
            raise DistillError(f"{path}: not a decontamination index of this version",
                               fix="rebuild it with data.decontam.build_index")
        return index


def _ngrams(tok: np.ndarray, tok_off: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (text, n-gram hash) pairs, as two arrays, of texts given by their words."""
    h, h_off = ngram_hashes(tok, tok_off, ngram)
    doc, h, _ = _distinct(np.repeat(np.arange(len(tok_off) - 1), np.diff(h_off)), h)
    return doc, h


def _contained(tok: np.ndarray, tok_off: np.ndarray,
               index: DecontamIndex) -> tuple[np.ndarray, np.ndarray]:
    """(text, problem) for each short problem whose word sequence occurs in a text: from each
    word that starts a short problem, the hash of the next w words, for each length w, looked up."""
    start, _ = lookup(tok, index.short_first)
    text = np.searchsorted(tok_off, start, side="right") - 1
    room = tok_off[text + 1] - start                      # words from the start to its text's end
    found_text, found_problem = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    acc = np.zeros(len(start), np.uint64)
    for w in range(1, int(index.short_lengths.max(initial=0)) + 1):
        live = room >= w
        start, text, room, acc = start[live], text[live], room[live], acc[live]
        acc = extend(acc, tok, start + w - 1)             # hash of the w words from start
        lo, hi = np.searchsorted(index.short_lengths, [w, w + 1])
        keys = index.short_hashes[lo:hi]
        first, last = np.searchsorted(keys, acc, "left"), np.searchsorted(keys, acc, "right")
        hit = last > first
        n = (last - first)[hit]                           # problems sharing that sequence
        at = np.repeat(first[hit] - np.cumsum(n) + n, n) + np.arange(n.sum())
        found_text.append(np.repeat(text[hit], n))
        found_problem.append(index.short_problems[lo + at])
    return np.concatenate(found_text), np.concatenate(found_problem)


def _distinct(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs, sorted, with how often each occurs."""
    small = len(a) and a.dtype.kind in "iu" and b.dtype.kind in "iu" and \
        min(a.min(), b.min()) >= 0 and max(a.max(), b.max()) < 1 << 32
    if small:   # numbers (rows, problems, index positions): one plain sort of a << 32 | b
        packed = np.sort(a.astype(np.uint64) << np.uint64(32) | b.astype(np.uint64))
        a = (packed >> np.uint64(32)).astype(np.int64)
        b = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    else:
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
    new = np.ones(len(a), dtype=bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(new)
    return a[starts], b[starts], np.diff(np.append(starts, len(a)))


def _read_problems(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"curate.decontam.extra_paths: {path} does not exist",
                          fix="give a JSONL or Parquet file with a `problem` column")
    df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, lines=True)
    if "problem" not in df.columns:
        raise RecipeError(f"curate.decontam.extra_paths: {path} has no `problem` column "
                          f"(columns: {list(df.columns)})", fix="name the problem text column "
                          "`problem` in that file")
    return df


def eval_sets(cfg: DecontamConfig) -> list[tuple[str, pd.DataFrame]]:
    """[(name, problems)] of cfg's benchmarks and extra files (columns `problem`, and `id` where
    the file has one): what build_index reads."""
    sets = [(name, load_benchmark(name)) for name in cfg.benchmarks]
    sets += [(Path(p).name, _read_problems(p)) for p in cfg.extra_paths]
    return [(name, df[[c for c in ("id", "problem") if c in df.columns]]) for name, df in sets]


def build_index(cfg: DecontamConfig, sets: list[tuple[str, pd.DataFrame]] | None = None
                ) -> DecontamIndex:
    """The n-gram index of cfg's benchmarks and extra files; `sets`: eval_sets(cfg), when they
    were read already (the stage on Ray reads them once, in the driver)."""
    sets = eval_sets(cfg) if sets is None else sets
    docs, hashes, source, ids = [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)], [], []
    short = ([np.zeros(0, np.int64)], [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)],
             [np.zeros(0, np.uint64)])
    for s, (_, df) in enumerate(sets):
        tok, tok_off = words(df["problem"])
        lens = np.diff(tok_off)
        doc, h = _ngrams(tok, tok_off, cfg.ngram)
        long = lens[doc] >= cfg.ngram
        docs.append(doc[long] + len(source))
        hashes.append(h[long])
        few = np.flatnonzero((lens > 0) & (lens < cfg.ngram))
        for part, values in zip(short, (lens[few], sequence_hashes(tok, tok_off[few], lens[few]),
                                        few + len(source), tok[tok_off[few]])):
            part.append(values)
        source += [s] * len(df)
        ids += (df["id"].astype(str) if "id" in df.columns else df.index.astype(str)).tolist()
    doc, h = np.concatenate(docs), np.concatenate(hashes)
    order = np.argsort(h, kind="stable")
    uniq, first = np.unique(h[order], return_index=True)
    s_len, s_hash, s_problem, s_first = (np.concatenate(part) for part in short)
    s_order = np.lexsort((s_problem, s_hash, s_len))
    ngrams = np.bincount(doc, minlength=len(source))
    ngrams[s_problem] = 1
    return DecontamIndex(
        ngram=cfg.ngram, names=[name for name, _ in sets], hashes=uniq,
        ptr=np.append(first, len(h)).astype(np.int64), problems=doc[order],
        problem_ngrams=ngrams, problem_source=np.array(source, dtype=np.int64),
        problem_ids=np.array(ids, dtype=object), short_lengths=s_len[s_order],
        short_hashes=s_hash[s_order], short_problems=s_problem[s_order],
        short_first=np.unique(s_first))


def _match(texts: Any, cfg: DecontamConfig, index: DecontamIndex) -> pd.DataFrame:
    """(row, problem, shared) for every (row position, problem) pair that meets the rule."""
    if index.ngram != cfg.ngram:
        raise DistillError(f"decontamination index built with ngram={index.ngram}, config has "
                           f"ngram={cfg.ngram}", fix="rebuild the index with this config")
    tok, tok_off = words(texts)
    h, h_off = ngram_hashes(tok, tok_off, cfg.ngram)
    pos = np.searchsorted(index.hashes, h)
    hit = pos < len(index.hashes)
    hit[hit] = index.hashes[pos[hit]] == h[hit]
    doc = np.repeat(np.arange(len(h_off) - 1), np.diff(h_off))[hit]   # only n-grams in the index
    doc, pos, _ = _distinct(doc, pos[hit])                              # each once per row
    n_owners = index.ptr[pos + 1] - index.ptr[pos]
    run = np.repeat(index.ptr[pos] - np.cumsum(n_owners) + n_owners, n_owners)
    problem = index.problems[run + np.arange(len(run))]
    row, problem, shared = _distinct(np.repeat(doc, n_owners), problem)
    total = index.problem_ngrams[problem]
    ok = (shared >= np.minimum(cfg.min_overlap, total)) & (shared >= cfg.min_coverage * total)
    s_row, s_problem, _ = _distinct(*_contained(tok, tok_off, index))
    return pd.DataFrame({"row": np.concatenate([row[ok], s_row]),
                         "problem": np.concatenate([problem[ok], s_problem]),
                         "shared": np.concatenate([shared[ok], np.ones(len(s_row), np.int64)])})


def _scan(df: pd.DataFrame, cfg: DecontamConfig, column: str,
          index: DecontamIndex | None) -> tuple[pd.DataFrame, DecontamIndex | None]:
    """All matches of df's rows (by position), chunk by chunk, and the index used."""
    require_columns(df, [column], "decontamination", fix="pass column= naming the problem text")
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
