"""The run store: `open_run(DIR).stage("curate").to_pandas()`; one folder per stage, manifest last.

Layout of a run directory:
    run.json                      which keyed folder is current for each stage (updated per stage)
    <stage>-<key12>/manifest.json written last: its existence means the stage completed
    <stage>-<key12>/data/*.parquet   the rows the stage kept
    <stage>-<key12>/rejected/*.parquet  the rows it rejected, each with `reject_reason`
The key is a hash of (stage name, version, the config fields that change results, input keys),
so a changed setting gets a new folder and an unchanged one is found done.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.pipeline.errors import DistillError
from distill.pipeline.secrets import redact, redact_frame

MANIFEST = "manifest.json"
RESUME_STATE = ("checkpoints", "shards")  # folders a stage resumes from; checked by the stage


def vouched_files(out_dir: Path) -> dict[str, dict]:
    """{relative path: {size, digest}} of every file a finished stage vouches for: all but the
    manifest, hidden and temporary files, and its resume state (RESUME_STATE)."""
    from distill.pipeline.fingerprint import file_digest

    files = {}
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(out_dir)
        if rel.as_posix() == MANIFEST or rel.parts[0] in RESUME_STATE \
                or any(part.startswith(".") for part in rel.parts):
            continue
        files[rel.as_posix()] = {"size": path.stat().st_size, "digest": file_digest(path)}
    return files


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary name and a rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON, atomically, with secrets masked (pipeline.secrets)."""
    write_atomic(path, redact(json.dumps(obj, indent=2, sort_keys=True, default=str)) + "\n")


ROW_GROUP_ROWS = 1024   # rows per Parquet row group written: a reader that wants a slice of a
# file (pipeline.slices: curate's work items) decodes only the groups that hold it


def write_parquet(df: "pd.DataFrame", path: Path, types: dict | None = None,  # noqa: F821
                  metadata: dict[str, str] | None = None) -> None:
    """Write a DataFrame as one Parquet file, atomically, with secrets masked in its text.
    Row groups hold ROW_GROUP_ROWS rows. `types` ({column: pyarrow type}) fixes those columns'
    types (others are inferred), so the parts of one dataset agree even where a part's column is
    empty or all null. `metadata` joins the file's key-value metadata (e.g. which process wrote
    it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    df = redact_frame(df)
    schema = None
    if types:
        schema = pa.Schema.from_pandas(df, preserve_index=False)
        schema = pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in schema],
                           metadata=schema.metadata)
    table = pa.Table.from_pandas(df, preserve_index=False, schema=schema)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                              **{k.encode(): v.encode() for k, v in metadata.items()}})
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, path)


def read_parquet_dir(folder: Path, columns: list[str] | None = None) -> "pd.DataFrame":  # noqa: F821
    """All finished Parquet files in `folder` (temporary files skipped) as one DataFrame."""
    import pandas as pd

    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
    return pd.concat([pd.read_parquet(p, columns=columns) for p in files], ignore_index=True)


@dataclass(frozen=True)
class StageOutput:
    """A finished stage's folder: its kept rows, rejected rows, manifest and artefacts."""

    name: str
    path: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())

    @property
    def key(self) -> str:
        return self.manifest["key"]

    def to_pandas(self, *, rejected: bool = False) -> "pd.DataFrame":  # noqa: F821
        return read_parquet_dir(self.path / ("rejected" if rejected else "data"))

    def to_dataset(self, *, rejected: bool = False) -> "datasets.Dataset":  # noqa: F821
        """The rows as a Hugging Face `datasets.Dataset`."""
        import datasets

        return datasets.Dataset.from_pandas(self.to_pandas(rejected=rejected), preserve_index=False)

    def artefact(self, name: str) -> Path:
        return self.path / name

    def content_digest(self) -> str:
        """A digest of what this output holds (the manifest's file checksums; the key for a
        manifest without them): readers record it and run again when it changes."""
        from distill.pipeline.keys import digest

        m = self.manifest
        return digest(m["files"]) if "files" in m else m["key"]

    def damage(self) -> list[str]:
        """What no longer matches the manifest's checksums (missing, cut, changed or unexpected
        files); empty when the stage's output is whole. Manifests without checksums pass."""
        vouched = self.manifest.get("files")
        if vouched is None:
            return []
        found = vouched_files(self.path)
        problems = [f"{rel}: missing" for rel in vouched if rel not in found]
        problems += [f"{rel}: {'size' if found[rel]['size'] != v['size'] else 'content'} differs"
                     for rel, v in vouched.items() if rel in found and found[rel] != v]
        problems += [f"{rel}: not in the manifest" for rel in found if rel not in vouched]
        return problems


class RunStore:
    """One run directory. Stages are found through run.json, or by scanning for manifests."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage_dir(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key[:12]}"

    def is_done(self, name: str, key: str) -> bool:
        """The manifest exists (it is written last). Whether the files still match it is
        StageOutput.damage(), which the runner checks before trusting a finished stage."""
        return (self.stage_dir(name, key) / MANIFEST).exists()

    def _index(self) -> dict:
        path = self.root / "run.json"
        return json.loads(path.read_text()) if path.exists() else {"stages": {}}

    def record(self, name: str, key: str, recipe_name: str, inputs: dict[str, str]) -> None:
        """Point run.json's entry for `name` at the folder for `key` (call after the manifest),
        keeping the view one consistent chain: every stage listed was made from the stages
        listed before it. Stages whose inputs are no longer the listed ones (a re-run changed an
        earlier stage and stopped before reaching them) leave the view; their folders stay."""
        index = self._index()
        stages, keys = dict(index["stages"]), dict(index.get("keys", {}))
        inputs_of = dict(index.get("inputs", {}))
        stages[name], keys[name], inputs_of[name] = self.stage_dir(name, key).name, key, dict(inputs)
        changed = True
        while changed:  # drop stages that were built on inputs the view no longer holds
            changed = False
            for n in list(stages):
                if n not in keys or any(keys.get(dep) != k for dep, k in inputs_of.get(n, {}).items()):
                    del stages[n]
                    keys.pop(n, None), inputs_of.pop(n, None)
                    changed = True
        index.update(recipe=recipe_name, stages=stages, keys=keys, inputs=inputs_of)
        write_json(self.root / "run.json", index)

    def stage_names(self) -> list[str]:
        return list(self._index()["stages"])

    def stage(self, name: str) -> StageOutput:
        """The current finished output of stage `name`; the error lists the finished stages."""
        folder = self._index()["stages"].get(name)
        if folder is None or not (self.root / folder / MANIFEST).exists():
            done = ", ".join(self.stage_names()) or "none"
            raise DistillError(
                f"stage {name!r} has no finished output in {self.root}",
                fix=f"finished stages here: {done}; run the recipe with `distill run` first",
            )
        return StageOutput(name, self.root / folder)


def open_run(path: str | Path) -> RunStore:
    """Open a run directory written by `distill run` (see RunStore.stage)."""
    root = Path(path)
    if not (root / "run.json").exists():
        raise DistillError(f"{root} is not a distill run directory (no run.json)",
                           fix="pass the --run-dir of a `distill run`")
    return RunStore(root)
