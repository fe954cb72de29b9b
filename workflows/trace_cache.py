"""The teacher's answers, kept by request: `TraceCache(folder).pending(requests)`, `.write(frame)`,
`.answer_shards(requests)`; on the workers `write_block(batch, folder)` and `read_answers`.

The generate stage asks the teacher only for requests this cache does not hold. A request is
identified by `request_key`: a hash of its id and the exact messages the teacher sees, so an
edited problem (same prompt id, new text) is asked again while an unchanged one never is. The
cache folder is keyed by the teacher settings that change what it writes (model content,
sampling, template, seed; not prices), so re-pricing, adding prompts or editing a reference
answer re-uses every answer already paid for, and a killed run resumes by row.

Shards are written under a temporary name and renamed (a killed run loses only what was in flight;
the next run removes its temporary file) and named by their rows. A shard that cannot be read (cut
by a crash or a full disk) is moved to `damaged/` and its requests are asked again; nothing else is
lost.

Shards are written where the answers are: by the Ray worker that ran the engine's block
(`write_block`, vLLM) or by the driver per batch (the HTTP teacher); each records its writer
(`shard_writer(path)`: Ray node id, pid, host). The driver reads only the key and error columns
(`index`) to plan; the answers' text is read by the workers that assemble the stage's output.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from distill.pipeline.cluster import writer_identity
from distill.pipeline.errors import DistillError
from distill.pipeline.store import write_parquet

ANSWER_COLUMNS = ["request_key", "request_id", "text", "reasoning", "prompt_tokens",
                  "completion_tokens", "finish_reason", "error"]
WRITER = "distill.writer"  # a shard's Parquet metadata key: who wrote it (writer_identity)


def request_key(request_id: str, messages: list[dict]) -> str:
    """The identity of one request: its id and the exact conversation sent."""
    blob = json.dumps([request_id, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def shard_name(keys: pd.Series) -> str:
    """`shard-<hash of the sorted request keys>.parquet`: a name that depends on the rows only."""
    digest = hashlib.blake2b("\n".join(sorted(keys)).encode(), digest_size=8).hexdigest()
    return f"shard-{digest}.parquet"


class TraceCache:
    """One folder of shards (`shards/`, `damaged/`) holding answers by `request_key`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.shards = self.folder / "shards"
        self.damaged: list[str] = []
        self._seen: dict[str, pd.DataFrame] = {}  # shard name -> its (request_key, failed)

    def _files(self) -> list[Path]:
        if not self.shards.exists():
            return []
        return sorted(p for p in self.shards.glob("*.parquet") if not p.name.startswith("."))

    def _read(self, path: Path, columns: list[str] | None = None) -> pd.DataFrame | None:
        import pyarrow as pa

        try:
            return pd.read_parquet(path, columns=columns)
        except (OSError, pa.ArrowException, ValueError):
            (self.folder / "damaged").mkdir(parents=True, exist_ok=True)
            os.replace(path, self.folder / "damaged" / path.name)
            self.damaged.append(path.name)
            return None

    def index(self) -> pd.DataFrame:
        """(request_key, failed, shard) of every answer held, shards in name order; reads only
        the key and error columns, of the shards not read before."""
        files = self._files()
        for path in files:
            if path.name not in self._seen:
                part = self._read(path, ["request_key", "error"])
                if part is not None:
                    self._seen[path.name] = pd.DataFrame({
                        "request_key": part["request_key"].astype(str).to_numpy(),
                        "failed": part["error"].notna().to_numpy()})
        names = [p.name for p in files if p.name in self._seen]
        if not names:
            return pd.DataFrame({"request_key": pd.Series([], dtype=str),
                                 "failed": pd.Series([], dtype=bool), "shard": pd.Series([], dtype=str)})
        return pd.concat([self._seen[n].assign(shard=n) for n in names], ignore_index=True)

    def pending(self, requests: pd.DataFrame, *, retry_errors: bool = False) -> pd.DataFrame:
        """The requests the cache holds no answer for (or only a failed one, with retry_errors).
        A shard's temporary file left by a killed run (never renamed, so never an answer) is
        removed first."""
        self.remove_temporary()
        held = self.index()
        have = set(held.loc[~held["failed"], "request_key"] if retry_errors else held["request_key"])
        return requests[~requests["request_key"].isin(have)]

    def remove_temporary(self) -> None:
        """Remove temporary files of writes that never finished (a killed run or worker)."""
        for tmp in self.shards.glob(".*.tmp") if self.shards.exists() else ():
            tmp.unlink(missing_ok=True)

    def write(self, frame: pd.DataFrame) -> str | None:
        """Add finished rows (with `request_key`) as one shard; returns its name (None for no
        rows). The writing process is recorded in the file's metadata (`distill.writer`)."""
        if not len(frame):
            return None
        name = shard_name(frame["request_key"])
        write_parquet(frame, self.shards / name, metadata={WRITER: json.dumps(writer_identity())})
        return name

    def answer_shards(self, requests: pd.DataFrame) -> pd.Series:
        """For each request (by `request_key`, aligned with `requests`), the shard holding the
        answer it gets: where a request was answered more than once (a failure, then a retry;
        a shard copied) the answer without an error wins, then the first shard by name. Raises
        when some request has no answer."""
        held = self.index()
        held = held[held["request_key"].isin(set(requests["request_key"]))]
        chosen = held.sort_values(["request_key", "failed", "shard"], kind="stable") \
            .drop_duplicates("request_key").set_index("request_key")["shard"]
        shards = requests["request_key"].map(chosen)
        missing = requests[shards.isna()]
        if len(missing):
            raise DistillError(f"generate: the teacher returned no result for {len(missing)} of "
                               f"{requests['request_key'].nunique()} requests (e.g. "
                               f"{sorted(missing['request_id'].astype(str))[:3]})",
                               fix="re-run: generation resumes and asks only for those; if they "
                                   "stay missing, check the teacher's endpoint or engine log")
        return shards


def shard_writer(path: Path) -> dict:
    """Who wrote a shard: {node, pid, host} from its metadata (pipeline.cluster.writer_identity)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(WRITER.encode(), b"{}"))


def read_answers(folder: str | Path, wanted: pd.DataFrame) -> pd.DataFrame:
    """On a worker: the answers of `wanted` (`request_key`, `shard`: TraceCache.answer_shards),
    each read from its shard, one row per request."""
    shards = Path(folder) / "shards"
    parts = []
    for name, keys in wanted.groupby("shard", sort=True)["request_key"]:
        rows = pd.read_parquet(shards / name)
        parts.append(rows[rows["request_key"].isin(set(keys))])
    found = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ANSWER_COLUMNS)
    return found.drop_duplicates("request_key", ignore_index=True)


def write_block(batch: Any, folder: str) -> pd.DataFrame:
    """On a worker: one block of teacher results (with `request_key`) written as one shard of
    the cache in `folder`; returns one line (shard, rows, completion_tokens, node, pid)."""
    from distill.pipeline.accounting import as_frame

    frame = as_frame(batch)
    frame = frame[[c for c in ANSWER_COLUMNS if c in frame.columns]]
    name = TraceCache(Path(folder)).write(frame)
    return shard_line(name, frame, writer_identity())


def shard_line(name: str | None, frame: pd.DataFrame, who: dict) -> pd.DataFrame:
    """What the driver learns about one written shard."""
    tokens = int(frame["completion_tokens"].sum()) if len(frame) else 0
    return pd.DataFrame({"shard": [name or ""], "rows": [len(frame)], "completion_tokens": [tokens],
                         "node": [who["node"]], "pid": [int(who["pid"])]})
