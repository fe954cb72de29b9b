"""The teacher's answers, kept by request: `TraceCache(folder).pending(requests)`, `.write(frame)`,
`.rows(requests)`.

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
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from distill.pipeline.errors import DistillError
from distill.pipeline.store import write_parquet


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

    def keys(self, *, with_errors: bool = True) -> set[str]:
        """The request keys answered so far (`with_errors=False`: only those without an error)."""
        found: set[str] = set()
        for path in self._files():
            part = self._read(path, ["request_key", "error"])
            if part is None:
                continue
            if not with_errors:
                part = part[part["error"].isna()]
            found.update(part["request_key"])
        return found

    def pending(self, requests: pd.DataFrame, *, retry_errors: bool = False) -> pd.DataFrame:
        """The requests the cache holds no answer for (or only a failed one, with retry_errors).
        A shard's temporary file left by a killed run (never renamed, so never an answer) is
        removed first."""
        for tmp in self.shards.glob(".*.tmp") if self.shards.exists() else ():
            tmp.unlink(missing_ok=True)
        have = self.keys(with_errors=not retry_errors)
        return requests[~requests["request_key"].isin(have)]

    def write(self, frame: pd.DataFrame) -> None:
        """Add finished rows (with `request_key`) as one shard."""
        if len(frame):
            write_parquet(frame, self.shards / shard_name(frame["request_key"]))

    def rows(self, requests: pd.DataFrame) -> pd.DataFrame:
        """The cached answer of every request, in the requests' order; where a request was
        answered more than once (a failure, then a retry) the answer without an error wins."""
        parts = [p for p in (self._read(path) for path in self._files()) if p is not None]
        wanted = set(requests["request_key"])
        found = pd.concat([p[p["request_key"].isin(wanted)] for p in parts], ignore_index=True) \
            if parts else pd.DataFrame(columns=["request_key"])
        if len(found):
            found = found.assign(_failed=found["error"].notna()) \
                .sort_values(["request_key", "_failed"], kind="stable") \
                .drop_duplicates("request_key").drop(columns="_failed")
        missing = requests[~requests["request_key"].isin(set(found["request_key"]))]
        if len(missing):
            raise DistillError(f"generate: the teacher returned no result for {len(missing)} of "
                               f"{len(wanted)} requests (e.g. "
                               f"{sorted(missing['request_id'].astype(str))[:3]})",
                               fix="re-run: generation resumes and asks only for those; if they "
                                   "stay missing, check the teacher's endpoint or engine log")
        answers = found.drop(columns=[c for c in requests.columns if c != "request_key"
                                      and c in found.columns])
        return requests.merge(answers, on="request_key", how="left", validate="one_to_one")
