"""Exact and near-duplicate flags over one text column: flag, don't drop.

    cfg = DedupeConfig(columns=["problem"], threshold=0.8)
    for col in cfg.columns:
        reasons = flag_duplicates(df, cfg, column=col)   # pd.Series: None = kept
    ds = dedupe_ray(ray_ds, cfg, column="problem", id_column="id")   # adds `dedupe_reason`
    use_ray(cfg, n_rows)                                  # which of the two `distributed` asks for

Exact: rows whose normalised text is equal (lowercased, split on whitespace: case and spacing
are ignored, punctuation is not; see data.minhash) form a group; one row is kept. Near: MinHash
over `ngram` word (or byte) shingles and LSH with `bands` x `rows` (from `threshold` and
`num_perm` by datasketch's rule) give candidate pairs: each LSH bucket's rows paired with the
bucket's first row (by order). With `verify`, pairs whose estimated Jaccard is below `threshold`
are dropped. Pairs are moved onto the rows kept by exact dedupe and clustered as connected
components (union-find). In every exact group and near cluster one row is kept by `keep`
("first": smallest order, i.e. `order_column` then position, or `id_column` on Ray;
"longest"/"shortest": most/fewest characters, ties to the first); the others get
"duplicate_exact" / "duplicate_near".

Scope: with `within` (e.g. "prompt_id") only rows with equal values there can be duplicates of
each other (the value joins every bucket key, so groups never meet); with `min_chars`, texts
shorter than that many characters are left out (never flagged, never a group's kept row).

On Ray (data.dedupe_ray): the same steps over a shuffle; the result equals
`flag_duplicates(df, cfg, column=..., order_column=id_column)` on the same rows.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.data.columns import require_columns
from distill.data.minhash import Sketch, band_keys, estimated_jaccard, optimal_bands, sketch
from distill.pipeline.errors import DistillError
from distill.pipeline.keys import RUNTIME

REASON_EXACT, REASON_NEAR = "duplicate_exact", "duplicate_near"
_GOLD = 0x9E3779B97F4A7C15


class DedupeConfig(BaseModel):
    """How to find duplicates; the integrator runs it once per entry of `columns`."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="Flag rows whose normalised text equals a kept row's.")
    near: bool = Field(True, description="Flag rows whose MinHash Jaccard with a kept row is high.")
    columns: list[str] = Field(default_factory=lambda: ["problem"], min_length=1,
                               description="Text columns to dedupe over, each on its own, e.g. "
                               "['problem'] for prompts, ['answer_text'] for responses.")
    threshold: float = Field(0.8, gt=0.0, le=1.0,
                             description="Jaccard similarity of shingle sets that counts as near.")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations per text.")
    shingle: Literal["word", "char"] = Field("word", description="Shingle unit: words or bytes.")
    ngram: int = Field(5, ge=1, le=64, description="Units per shingle: 5 words (about 25 bytes of "
                       "text; use ~9 with shingle='char').")
    bands: int | None = Field(None, ge=1, description="LSH bands; None: datasketch's optimum.")
    rows: int | None = Field(None, ge=1, description="Signature rows per band; with `bands`.")
    verify: bool = Field(False, description="Drop LSH pairs whose estimated Jaccard < threshold "
                         "before clustering: fewer chained merges, but misses about a third of "
                         "the pairs just above threshold that LSH finds (datasketch: no check).")
    seed: int = Field(0, ge=0, description="Seed of the shingle hash and the permutations.")
    keep: Literal["first", "longest", "shortest"] = Field(
        "first", description="Which row of a duplicate group is kept.")
    within: str | None = Field(None, description="Only rows with equal values in this column "
                               "can be duplicates, e.g. 'prompt_id' (a prompt's own samples); "
                               "None: any two rows.")
    min_chars: int = Field(0, ge=0, description="Texts with fewer characters are left out: "
                           "never flagged, never kept in place of another.")
    distributed: Literal["auto", "never", "always"] = Field(
        "auto", description="Run on Ray Data: 'auto' when rows exceed local_max_rows.", json_schema_extra=RUNTIME)
    local_max_rows: int = Field(2_000_000, ge=1, description="'auto' stays in one process up to "
                                "this many rows (signatures take 4*num_perm bytes a row).", json_schema_extra=RUNTIME)
    threads: int = Field(1, ge=1, le=256, description="Threads for signatures in one process "
                         "(results do not depend on it); Ray tasks use one each.", json_schema_extra=RUNTIME)

    @model_validator(mode="after")
    def _check_bands(self) -> DedupeConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both `bands` and `rows`, or neither (derived from threshold)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = "
                             f"{self.num_perm}; lower them or raise num_perm")
        return self

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): the given ones, or the optimum for threshold and num_perm."""
        if self.bands is not None:
            return self.bands, self.rows
        return _optimal_bands(self.threshold, self.num_perm)


@lru_cache(maxsize=32)
def _optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    return optimal_bands(threshold, num_perm)


def use_ray(cfg: DedupeConfig, n_rows: int) -> bool:
    """Whether `cfg.distributed` asks for dedupe_ray for a set of n_rows."""
    return cfg.distributed == "always" or (cfg.distributed == "auto" and n_rows > cfg.local_max_rows)


# -- array steps shared by the one-process and the Ray paths ------------------------------------

def _rank(values: Any) -> np.ndarray:
    """0..n-1 by (value, position)."""
    codes, _ = pd.factorize(pd.Series(values), sort=True)
    order = np.lexsort((np.arange(len(codes)), codes))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes))
    return rank


def _primary(lengths: np.ndarray, keep: str) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    return {"first": np.zeros_like(lengths), "longest": -lengths, "shortest": lengths}[keep]


def pick(groups: list[np.ndarray], primary: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row, the index of the row kept in its group (equal `groups` values): the row
    with the smallest (primary, rank). One sort of (top bits of a combined key, row) finds
    the few rows that share those bits; only they are sorted on every field (so a clash of
    top bits costs time, never a wrong pick)."""
    n = len(rank)
    coarse = np.zeros(n, dtype=np.uint64)
    for g in groups:  # times an odd constant last: the top bits are well spread
        coarse = (coarse + np.asarray(g).astype(np.uint64, copy=False)) * np.uint64(_GOLD)
    bits = np.uint64(max(1, (n - 1).bit_length()))
    packed = coarse >> bits << bits | np.arange(n, dtype=np.uint64)
    packed.sort()     # a plain sort of uint64 is several times faster than an argsort
    order = (packed & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.intp)
    top = packed >> bits
    same = top[1:] == top[:-1]
    shared = np.zeros(n, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    out = np.arange(n)
    sub = order[shared]
    if len(sub):
        out[sub] = sub[_pick_sorted([np.asarray(g)[sub] for g in groups], primary[sub], rank[sub])]
    return out


def _pick_sorted(groups: list[np.ndarray], primary: np.ndarray, rank: np.ndarray) -> np.ndarray:
    n = len(rank)
    order = np.lexsort((rank, primary, *groups[::-1]))
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for g in groups:
        s = g[order]
        new[1:] |= s[1:] != s[:-1]
    out = np.empty(n, dtype=np.int64)
    out[order] = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    return out


def clusters(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """Connected-component label of each of n nodes given undirected edges (union-find)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(u), dtype=np.int8), (u, v)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def bucket_rows(sk: Sketch, cfg: DedupeConfig) -> dict[str, np.ndarray]:
    """The rows the grouping step reads: one per text for its exact key (band -1, keys ek0/ek1)
    and one per (text, band) for its LSH bucket key; `doc` is the text's index in `sk`."""
    n = len(sk.lengths)
    parts = [(np.zeros(0, int), np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, int))]
    if cfg.exact:
        parts.append((np.full(n, -1), sk.exact_keys[:, 0], sk.exact_keys[:, 1], np.arange(n)))
    if cfg.near:
        bands, rows = cfg.lsh_params()
        keys = band_keys(sk.signatures, bands, rows)
        parts.append((np.tile(np.arange(bands), n), keys.ravel(),
                      np.zeros(n * bands, np.uint64), np.repeat(np.arange(n), bands)))
    return {name: np.concatenate([p[i] for p in parts])
            for i, name in enumerate(("band", "key", "key2", "doc"))}


def bucket_pairs(rows: dict[str, np.ndarray], rank: np.ndarray, primary: np.ndarray,
                 sig: np.ndarray | None, cfg: DedupeConfig) -> tuple[np.ndarray, ...]:
    """(u, v, exact) doc pairs from rows grouped on (band, key, key2): each exact group's dropped
    texts v with its kept text u (by `keep`), and each LSH bucket's texts v with the bucket's
    first text u (verified by estimated Jaccard when cfg.verify). rank/primary are per doc."""
    doc = rows["doc"]
    exact_row = rows["band"] == -1
    keys = [rows[k] for k in ("band", "key", "key2", "within") if k in rows]
    first = pick(keys, np.where(exact_row, primary[doc], 0), rank[doc])
    moved = np.flatnonzero(first != np.arange(len(doc)))
    u, v, ex = doc[first[moved]], doc[moved], exact_row[moved]
    if cfg.verify and sig is not None:
        ok = ex.copy()
        ok[~ex] = estimated_jaccard(sig[u[~ex]], sig[v[~ex]]) >= cfg.threshold
        u, v, ex = u[ok], v[ok], ex[ok]
    return u, v, ex


def resolve(u: np.ndarray, v: np.ndarray, exact: np.ndarray, primary: np.ndarray,
            rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reasons, kept) per node from the pairs: exact duplicates point at their kept text; near
    pairs, moved onto kept texts, are clustered (union-find) and one text per cluster is kept
    (by keep). kept[i] is the node kept in i's group (i itself for kept nodes)."""
    n = len(rank)
    nodes = np.arange(n)
    rep = nodes.copy()
    rep[v[exact]] = u[exact]
    nu, nv = rep[u[~exact]], rep[v[~exact]]
    kept = pick([clusters(nu[nu != nv], nv[nu != nv], n)], primary, rank)
    reasons = np.full(n, None, dtype=object)
    reasons[(kept != nodes) & (rep == nodes)] = REASON_NEAR
    reasons[rep != nodes] = REASON_EXACT
    return reasons, kept[rep]


# -- one process ---------------------------------------------------------------------------------

def _sketch(texts: Any, cfg: DedupeConfig, column: str, threads: int = 1) -> Sketch:
    try:
        return sketch(texts, num_perm=cfg.num_perm, ngram=cfg.ngram, shingle=cfg.shingle,
                      seed=cfg.seed, exact=cfg.exact, near=cfg.near, threads=threads)
    except TypeError as e:
        raise DistillError(f"dedupe column {column!r}: {e}",
                           fix="dedupe a text column (DedupeConfig.columns)") from None


def within_keys(values: pd.Series) -> np.ndarray:
    """A 64-bit content hash per `within` value: equal values, equal keys, in any process."""
    return pd.util.hash_pandas_object(values, index=False).to_numpy(np.uint64)


def judged(texts: pd.Series, min_chars: int) -> np.ndarray:
    """Positions of the texts dedupe looks at: all, or those of at least min_chars characters."""
    if min_chars <= 0:
        return np.arange(len(texts))
    return np.flatnonzero(texts.fillna("").astype(str).str.len().to_numpy() >= min_chars)


def duplicate_groups(df: pd.DataFrame, cfg: DedupeConfig, *, column: str,
                     order_column: str | None = None) -> pd.DataFrame:
    """Per row of df: `dedupe_reason` (see flag_duplicates) and `dedupe_kept`, the index label
    of the row kept in its duplicate group (the row itself when it is kept and has no twins)."""
    require_columns(df, (column, order_column, cfg.within), "dedupe",
                    fix="fix DedupeConfig.columns / within, or the order column passed")
    for name in (order_column, cfg.within):
        if name is not None and df[name].isna().any():
            raise DistillError(f"dedupe: column {name!r} has nulls (row "
                               f"{df.index[df[name].isna()][0]!r})", fix="fill them first")
    reasons, kept = np.full(len(df), None, dtype=object), np.arange(len(df))
    pos = judged(df[column], cfg.min_chars)
    if len(pos):
        sub = df.iloc[pos]
        sk = _sketch(sub[column], cfg, column, cfg.threads)
        rank = _rank(sub[order_column]) if order_column is not None else np.arange(len(sub))
        primary = _primary(sk.lengths, cfg.keep)
        rows = bucket_rows(sk, cfg)
        if cfg.within is not None:
            rows["within"] = within_keys(sub[cfg.within])[rows["doc"]]
        u, v, ex = bucket_pairs(rows, rank, primary, sk.signatures, cfg)
        reasons[pos], sub_kept = resolve(u, v, ex, primary, rank)
        kept[pos] = pos[sub_kept]
    return pd.DataFrame({"dedupe_reason": pd.Series(reasons, index=df.index, dtype=object),
                         "dedupe_kept": df.index[kept]}, index=df.index)


def flag_duplicates(df: pd.DataFrame, cfg: DedupeConfig, *, column: str,
                    order_column: str | None = None) -> pd.Series:
    """"duplicate_exact" / "duplicate_near" for rows whose text in `column` duplicates a kept
    row's, None for kept rows; same index as df. Rows are ordered by order_column, then position."""
    return duplicate_groups(df, cfg, column=column, order_column=order_column)["dedupe_reason"]


def dedupe_ray(ds: Any, cfg: DedupeConfig, *, column: str, id_column: str,
               partitions: int | None = None) -> Any:
    """`ds` (a ray.data.Dataset with unique `id_column`) plus a `dedupe_reason` column, equal to
    flag_duplicates(df, cfg, column=column, order_column=id_column): see data.dedupe_ray."""
    from distill.data import dedupe_ray as on_ray

    return on_ray.dedupe_ray(ds, cfg, column=column, id_column=id_column, partitions=partitions)
