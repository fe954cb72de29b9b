"""Content fingerprints of files and folders: `file_digest(path)`, `tree_digest(folder)` -> hex.

Stage keys hold what a stage reads by content, never by path: a prompt file edited in place or
a model folder replaced under the same name gets a new key. Hashing is xxh3-128 over the bytes
(several GB/s); (size, mtime, ctime, inode) only decide whether a digest remembered from an earlier
call can be reused, they are never the key themselves. The memo lives under
`$DISTILL_HOME/fingerprints/` (one small JSON per file path), so a 140 GB model folder is read
once per change, not once per run.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import xxhash

from distill.pipeline.errors import DistillError

CHUNK = 8 << 20


def distill_home() -> Path:
    """Where caches live: $DISTILL_HOME, else ~/.cache/distill."""
    return Path(os.environ.get("DISTILL_HOME", Path.home() / ".cache" / "distill"))


def _memo_path(path: Path) -> Path:
    name = hashlib.sha1(str(path).encode()).hexdigest()
    return distill_home() / "fingerprints" / name[:2] / f"{name}.json"


def _hash_bytes(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """The content digest of one file (memoised by path, size, mtime, ctime and inode)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DistillError(f"{path} does not exist", fix="give an existing file") from None
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]  # ctime: no tool can set it
    memo = _memo_path(path)
    try:
        seen = json.loads(memo.read_text())
        if seen["stamp"] == stamp:
            return seen["digest"]
    except (OSError, ValueError, KeyError):
        pass
    digest = _hash_bytes(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(path), "stamp": stamp, "digest": digest}))
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return digest


def tree_digest(folder: str | Path, *, skip_hidden: bool = True) -> str:
    """The digest of a folder: every file's relative path and content, in sorted order.
    Hidden files and folders (`.cache`, `.git`, editor droppings) are skipped by default."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise DistillError(f"{root} is not a folder", fix="give an existing folder")
    h = xxhash.xxh3_128()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if skip_hidden and any(part.startswith(".") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{file_digest(path)}\n".encode())
    return h.hexdigest()


def path_digest(path: str | Path) -> str:
    """file_digest for a file, tree_digest for a folder."""
    path = Path(path)
    return tree_digest(path) if path.is_dir() else file_digest(path)
