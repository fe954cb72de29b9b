"""Exact and near-duplicate flags over a Ray Dataset: data.dedupe's steps around one shuffle.

    from distill.data.dedupe import dedupe_ray         # (or from distill.data.dedupe_ray)
    ds = dedupe_ray(ray_ds, cfg, column="problem", id_column="id")   # adds `dedupe_reason`

`map_batches` sketches each batch and emits one row per text for its exact key and one per
(text, band) for its bucket; one shuffle (`groupby(part).map_groups`) brings equal keys
together, where the same code as the one-process path turns them into pairs; the pairs (few)
are clustered on the driver (`duplicate_reasons`: the flagged ids), and a last `map_batches`
adds `dedupe_reason` by id. The input is read twice (sketch, then attach); the flagged ids must
fit in the driver's memory. The result equals `flag_duplicates(df, cfg, column=...,
order_column=id_column)` on the same rows.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from distill.data.dedupe import (
    DedupeConfig,
    _primary,
    _rank,
    _sketch,
    bucket_pairs,
    bucket_rows,
    judged,
    resolve,
    within_keys,
)


def _ray_rows(batch: pd.DataFrame, cfg: DedupeConfig, column: str, id_column: str,
              parts: int) -> dict[str, np.ndarray]:
    """Sketch a batch and emit its bucket rows (with ids, lengths, signatures per row)."""
    batch = batch.iloc[judged(batch[column], cfg.min_chars)]
    sk = _sketch(batch[column], cfg, column)
    rows = bucket_rows(sk, cfg)
    doc = rows.pop("doc")
    if cfg.within is not None:
        rows["within"] = within_keys(batch[cfg.within])[doc]
    out = rows | {"id": batch[id_column].to_numpy()[doc], "length": sk.lengths[doc],
                  "part": (rows["key"] % np.uint64(parts)).astype(np.int64)}
    if cfg.near and cfg.verify:
        out["sig"] = sk.signatures[doc]
    return out


def _ray_pairs(batch: dict[str, np.ndarray], cfg: DedupeConfig) -> dict[str, np.ndarray]:
    """One shuffle partition: its pairs as ids, with the lengths the driver's keep rule needs."""
    rows = {k: batch[k] for k in ("band", "key", "key2", "within") if k in batch}
    rows["doc"] = np.arange(len(batch["id"]))
    u, v, ex = bucket_pairs(rows, _rank(batch["id"]), _primary(batch["length"], cfg.keep),
                            batch.get("sig"), cfg)
    ids, length = batch["id"], batch["length"]
    return {"u": ids[u], "v": ids[v], "u_len": length[u], "v_len": length[v], "exact": ex}


def _ray_attach(batch: pd.DataFrame, reasons: Any, id_column: str) -> pd.DataFrame:
    import ray

    table = ray.get(reasons) if isinstance(reasons, ray.ObjectRef) else reasons
    found = batch[id_column].map(table)
    return batch.assign(dedupe_reason=found.astype(object).where(found.notna(), None))


def _reasons_on_driver(pairs: pd.DataFrame, keep: str) -> pd.Series:
    """Reason per flagged id, from all partitions' pairs (ids are ranked by value)."""
    if pairs.empty:
        return pd.Series([], dtype=object)
    ids, inv = np.unique(np.concatenate([pairs["u"], pairs["v"]]), return_inverse=True)
    e = len(pairs)
    lengths = np.zeros(len(ids), dtype=np.int64)
    lengths[inv[:e]], lengths[inv[e:]] = pairs["u_len"], pairs["v_len"]
    reasons, _ = resolve(inv[:e], inv[e:], pairs["exact"].to_numpy(bool),
                         _primary(lengths, keep), np.arange(len(ids)))
    flagged = reasons != None
    return pd.Series(reasons[flagged], index=ids[flagged], dtype=object)


def duplicate_reasons(ds: Any, cfg: DedupeConfig, *, column: str, id_column: str,
                      partitions: int) -> pd.Series:
    """The reason of every flagged id (index: id), as flag_duplicates gives them with rows
    ordered by `id_column`; rows sharing an id act as one (a self-pair changes nothing). The
    rows stay on the workers: the driver holds the pairs and the flagged ids."""
    columns = list(dict.fromkeys(c for c in (id_column, column, cfg.within) if c is not None))
    pairs = ds.select_columns(columns).map_batches(
        _ray_rows, batch_format="pandas",
        fn_kwargs={"cfg": cfg, "column": column, "id_column": id_column, "parts": partitions},
    ).groupby("part", num_partitions=partitions).map_groups(
        _ray_pairs, batch_format="numpy", fn_kwargs={"cfg": cfg}).to_pandas()
    return _reasons_on_driver(pairs, cfg.keep)


def dedupe_ray(ds: Any, cfg: DedupeConfig, *, column: str, id_column: str,
               partitions: int | None = None) -> Any:
    """`ds` (a ray.data.Dataset with unique `id_column`) plus a `dedupe_reason` column, equal to
    flag_duplicates(df, cfg, column=column, order_column=id_column) on the same rows.
    `partitions`: shuffle partitions (default: one per 200k rows)."""
    import ray

    parts = partitions or max(1, -(-ds.count() // 200_000))
    table = duplicate_reasons(ds, cfg, column=column, id_column=id_column, partitions=parts)
    return ds.map_batches(_ray_attach, batch_format="pandas",
                          fn_kwargs={"reasons": ray.put(table), "id_column": id_column})
