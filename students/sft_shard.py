"""Each trainer reads its own rows through Ray Data: the driver never holds the SFT set.

    rows = exact_blocks(ray.data.read_parquet(curated_dir), num_workers)   # driver: plans only
    TorchTrainer(..., datasets={TRAIN: rows}, dataset_config=OwnBlock())
    rows = read_shard(ray.train.get_dataset_shard(TRAIN))                  # on each worker

Every row goes to exactly one worker, chosen by content: the rows are sorted by `row_id` and cut
into `num_workers` contiguous blocks whose sizes differ by at most one (repartition without
shuffle), and worker i reads block i. So the same rows give every worker the same rows (and the
same batches, and the same weights) whatever the order of the files or blocks. Ray Train's
default split (`streaming_split(n, equal=True)`) would drop up to n-1 rows to make the shards
equal, and hands blocks to whichever worker asks first.
The blocks are made (sort, repartition, materialize: the rows sit in the nodes' object stores)
before the trainers start: on a small machine the trainers hold every CPU, and no Ray Data task
could run once they do. Handing worker i its block (`Dataset.split` of a materialized dataset
into as many parts as it has blocks) runs no task. A single local process reads its one block
through the same `read_shard`.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
from ray.train import DataConfig  # this module is imported only where Ray trains

TRAIN = "train"
ORDER = "row_id"


def exact_blocks(ds: Any, n: int) -> Any:
    """`ds` sorted by row_id and materialized as `n` blocks (sizes within one of each other)."""
    return ds.sort(ORDER).repartition(n).materialize()


class OwnBlock(DataConfig):
    """Ray Train DataConfig: worker i's `train` shard is block i of the dataset (exact_blocks)."""

    def configure(self, datasets: dict, world_size: int, worker_handles, worker_node_ids,
                  **kwargs) -> list[dict]:
        out: list[dict] = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            if ds.num_blocks() != world_size:
                raise ValueError(f"dataset {name!r} has {ds.num_blocks()} blocks for "
                                 f"{world_size} workers: make it with exact_blocks")
            for i, part in enumerate(ds.split(world_size)):
                out[i][name] = part.iterator()
        return out


def read_shard(shard: Any, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of one worker's shard (a Ray DataIterator) as a frame in row_id order."""
    frames = [b for b in shard.iter_batches(batch_format="pandas", batch_size=None)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns or [])
    if columns is not None:
        rows = rows[[c for c in columns if c in rows.columns]]
    if ORDER in rows.columns:
        rows = rows.sort_values(ORDER, kind="stable").reset_index(drop=True)
    return rows
