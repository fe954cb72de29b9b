"""The storage behind hub_server.HubServer: repos (refs and commits of path -> {oid, size, lfs}),
regular blobs by git oid, LFS objects by sha256; and the Hub's checks on card metadata."""
from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import yaml

LFS_PATTERNS = ["*.safetensors", "*.bin", "*.parquet", "*.pt", "*.pth", "*.ckpt", "*.gguf",
                "*.h5", "*.msgpack", "*.onnx", "*.arrow", "*.zip", "*.tar", "*.gz", "*.npy"]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BAD_TOKEN = "Invalid credentials in Authorization header"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\n"
            f"size {size}\n").encode()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def card_metadata_errors(content: str) -> list[str]:
    """The Hub's checks on a README's YAML header that our cards rely on."""
    found = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
    if not found:
        return []
    try:
        meta = yaml.safe_load(found[1]) or {}
    except yaml.YAMLError as exc:
        return [f"YAML: {exc}"]
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    errors = []
    for key in ("base_model", "datasets"):
        ids = meta.get(key, [])
        for value in ids if isinstance(ids, list) else [ids]:
            if not (isinstance(value, str) and REPO_ID.match(value)):
                errors.append(f'"{key}" must be a Hub repo id (org/name), got {value!r}')
    for key in ("tags", "task_categories"):
        if key in meta and not all(isinstance(t, str) for t in meta[key]):
            errors.append(f'"{key}" must be a list of strings')
    if "license" in meta and not isinstance(meta["license"], str):
        errors.append('"license" must be a string')
    for entry in meta.get("model-index", []):
        if not isinstance(entry, dict) or "name" not in entry:
            errors.append('"model-index" entries need a "name"')
            continue
        for result in entry.get("results", []):
            metrics = result.get("metrics", [])
            if not (result.get("task", {}).get("type") and result.get("dataset", {}).get("type")
                    and metrics and all("type" in m and "value" in m for m in metrics)):
                errors.append('"model-index" results need task.type, dataset.type and metrics '
                              'with type and value')
    return errors


class Store:
    """Repos as JSON (refs and commits: path -> {oid, size, lfs}) plus a blob and an LFS store."""

    def __init__(self, root: Path):
        self.root = root
        for sub in ("repos", "blobs", "lfs", "parts"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.counter = 0

    def _file(self, kind: str, repo: str) -> Path:
        return self.root / "repos" / kind / f"{repo}.json"

    def repo(self, kind: str, repo: str) -> dict:
        path = self._file(kind, repo)
        if not path.exists():
            raise HubError(404, "Repository not found", "RepoNotFound")
        return json.loads(path.read_text())

    def save(self, kind: str, repo: str, data: dict) -> None:
        path = self._file(kind, repo)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    def commit_of(self, data: dict, rev: str) -> str:
        if rev in data["refs"]:
            return data["refs"][rev]
        if rev in data["commits"]:
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def files(self, data: dict, rev: str) -> tuple[str, dict]:
        sha = self.commit_of(data, rev)
        return sha, data["commits"][sha]["files"]

    def new_commit(self, data: dict, parent: str | None, files: dict, title: str) -> str:
        self.counter += 1
        sha = hashlib.sha1(json.dumps([parent, files, title, self.counter]).encode()).hexdigest()
        data["commits"][sha] = {"parent": parent, "title": title, "files": files}
        return sha

    def put_blob(self, content: bytes) -> dict:
        oid = git_blob_oid(content)
        (self.root / "blobs" / oid).write_bytes(content)
        return {"oid": oid, "size": len(content), "lfs": None}

    def lfs_path(self, sha256: str) -> Path:
        return self.root / "lfs" / sha256

    def has_lfs(self, sha256: str) -> bool:
        return self.lfs_path(sha256).exists()

    def content(self, entry: dict) -> Path:
        return self.lfs_path(entry["lfs"]["oid"]) if entry["lfs"] else self.root / "blobs" / entry["oid"]
