"""A writable Hugging Face Hub for tests, on 127.0.0.1 at a free port, storing repos on disk.

    with HubServer(tmp_path / "hub", tokens={"hf_w": "tester"}) as hub:
        HfApi(endpoint=hub.url, token="hf_w").create_repo("tester/m")
        hub.requests                      # every request: method, host, path, headers, body
        hub.cut_uploads(after=2)          # later LFS uploads break off mid-body, until heal()

It speaks the part of the Hub HTTP API that `huggingface_hub` uses, as its client code sends it
(hf_api.py, _commit_api.py, lfs.py, file_download.py):
- `GET /api/whoami-v2`; `POST /api/repos/create` (409 when it exists); `POST /api/validate-yaml`
  (the card metadata rules below); `POST /api/{type}s/{id}/branch/{b}`; `GET .../refs`.
- upload: `POST .../preupload/{rev}` (uploadMode lfs for .gitattributes patterns, binary samples
  and files of 10 MB or more; `oid` of the file already there), `POST /{id}.git/info/lfs/objects/
  batch` (no `actions` for an object already stored; basic PUT, or multipart parts with a
  completion POST above `multipart_bytes`; a verify POST), then `POST .../commit/{rev}` (ndjson:
  header, file, lfsFile, deletedFile, deletedFolder; an lfsFile whose object never arrived is
  refused like the Hub does).
- download: `GET /api/{type}s/{id}[/revision/{rev}]` (sha, siblings), `GET .../tree/{rev}`,
  `HEAD/GET /{id}/resolve/{rev}/{path}` with X-Repo-Commit and ETag; LFS files answer 302 to a
  second origin (127.0.0.2, a "CDN" like the Hub's) with X-Linked-Etag and X-Linked-Size, and the
  CDN serves the bytes (Range too) without needing the token, as S3 does. LFS uploads go there.
Errors carry the Hub's X-Error-Code / X-Error-Message headers (RepoNotFound, RevisionNotFound,
EntryNotFound; 401 "Invalid credentials in Authorization header" for an unknown token).
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

from tests.students.hub_store import (
    BAD_TOKEN,
    GITATTRIBUTES,
    LFS_PATTERNS,
    HubError,
    Store,
    card_metadata_errors,
    git_blob_oid,
    lfs_pointer,
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    # --- plumbing -------------------------------------------------------------------------
    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes | dict | list | None = None,
              headers: dict | None = None, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else (body or b"")
        self.send_response(status)
        for key, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        record = {"method": self.command, "host": self.server.role, "path": split.path,
                  "query": parse_qs(split.query), "headers": {k.lower(): v for k, v in self.headers.items()}}
        hub.requests.append(record)
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        try:
            if self.server.role == "cdn":
                self._cdn(segs, record)
            else:
                self._hub(segs, record)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, {"error": err.message}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = _handle

    def _json(self, record: dict) -> dict:
        raw = self._body()
        record["json"] = json.loads(raw or b"{}")
        return record["json"]

    # --- auth -------------------------------------------------------------------------------
    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            if required:
                raise HubError(401, "You must be authenticated to do this")
            return None
        user = self.server.hub.tokens.get(auth.removeprefix("Bearer ").strip())
        if user is None:
            raise HubError(401, BAD_TOKEN)
        return user

    def _may_write(self, repo: str) -> None:
        user = self._user(required=True)
        if repo.split("/")[0] not in self.server.hub.namespaces(user):
            raise HubError(403, f"You don't have the rights to write to {repo}")

    def _readable(self, kind: str, repo: str) -> dict:
        data = self.server.hub.store.repo(kind, repo)
        user = self._user(required=False)
        if data["private"] and (user is None or repo.split("/")[0] not in self.server.hub.namespaces(user)):
            raise HubError(401, "Repository not found", "RepoNotFound")
        return data

    # --- the Hub ------------------------------------------------------------------------------
    def _hub(self, segs: list[str], record: dict) -> None:
        hub, store = self.server.hub, self.server.hub.store
        if segs[:2] == ["api", "whoami-v2"]:
            user = self._user(required=True)
            return self._send(200, {"type": "user", "name": user, "fullname": user,
                                    "orgs": [{"name": o, "type": "org"} for o in hub.orgs.get(user, [])],
                                    "auth": {"type": "access_token",
                                             "accessToken": {"displayName": "tests", "role": "write"}}})
        if segs[:3] == ["api", "repos", "create"]:
            return self._create(self._json(record))
        if segs[:2] == ["api", "validate-yaml"]:
            errors = card_metadata_errors(self._json(record).get("content", ""))
            return self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                       "warnings": []})
        if segs[0] == "api" and len(segs) >= 4 and segs[1] in ("models", "datasets", "spaces"):
            return self._api(segs[1][:-1], "/".join(segs[2:4]), segs[4:], record)
        kind = "dataset" if segs[0] == "datasets" else "model"
        segs = segs[1:] if kind == "dataset" else segs
        if segs[:1] == ["lfs-verify"]:
            body = self._json(record)
            found = store.has_lfs(body["oid"]) and store.lfs_path(body["oid"]).stat().st_size == body["size"]
            return self._send(200 if found else 404, {"ok": found})
        if segs[:1] == ["lfs-complete"]:
            return self._complete_multipart(segs[1], self._json(record))
        if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(kind, f"{segs[0]}/{segs[1][:-4]}", self._json(record))
        if len(segs) >= 5 and segs[2] == "resolve":
            return self._resolve(kind, "/".join(segs[:2]), segs[3], "/".join(segs[4:]))
        raise HubError(404, f"no route {self.path}")

    def _url(self, kind: str, repo: str) -> str:
        return f"{self.server.hub.url}/{'datasets/' if kind == 'dataset' else ''}{repo}"

    def _create(self, body: dict) -> None:
        hub = self.server.hub
        user = self._user(required=True)
        kind = body.get("type") or "model"
        repo = f"{body.get('organization') or user}/{body['name']}"
        self._may_write(repo)
        with hub.store.lock:
            try:
                hub.store.repo(kind, repo)
                return self._send(409, {"error": f"You already created this {kind} repo",
                                        "url": self._url(kind, repo)})
            except HubError:
                pass
            private = bool(body.get("private")) or body.get("visibility") == "private"
            data = {"private": private, "refs": {}, "commits": {}}
            first = hub.store.new_commit(data, None, {".gitattributes": hub.store.put_blob(
                GITATTRIBUTES.encode())}, "initial commit")
            data["refs"]["main"] = first
            hub.store.save(kind, repo, data)
        self._send(200, {"url": self._url(kind, repo), "name": repo})

    def _api(self, kind: str, repo: str, rest: list[str], record: dict) -> None:
        store = self.server.hub.store
        data = self._readable(kind, repo)
        if not rest or rest[0] == "revision":
            sha, files = store.files(data, rest[1] if rest else "main")
            return self._send(200, {"id": repo, "author": repo.split("/")[0], "sha": sha,
                                    "private": data["private"], "lastModified": "2026-01-01T00:00:00.000Z",
                                    "tags": [], "downloads": 0, "likes": 0,
                                    "siblings": [{"rfilename": p} for p in sorted(files)]})
        if rest[0] == "tree":
            return self._tree(data, rest[1], "/".join(rest[2:]), record["query"])
        if rest[0] == "refs":
            return self._send(200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                                                 for b, s in data["refs"].items()],
                                    "converts": [], "tags": [], "pullRequests": []})
        self._may_write(repo)
        if rest[0] == "branch":
            body = self._json(record)
            with store.lock:
                data = store.repo(kind, repo)
                if rest[1] in data["refs"]:
                    raise HubError(409, f"Reference already exists: refs/heads/{rest[1]}")
                data["refs"][rest[1]] = store.commit_of(data, body.get("startingPoint") or "main")
                store.save(kind, repo, data)
            return self._send(200, {})
        if rest[0] == "preupload":
            return self._preupload(data, rest[1], self._json(record))
        if rest[0] == "commit":
            return self._commit(kind, repo, rest[1], record)
        raise HubError(404, f"no route {self.path}")

    def _tree(self, data: dict, rev: str, prefix: str, query: dict) -> None:
        _, files = self.server.hub.store.files(data, rev)
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        base = f"{prefix}/" if prefix else ""
        entries, folders = [], set()
        for path, entry in sorted(files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base):].split("/")
            for i in range(1, len(parts)):
                folders.add(base + "/".join(parts[:i]))
            if len(parts) > 1 and not recursive:
                continue
            item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                item["lfs"] = {"oid": entry["lfs"]["oid"], "size": entry["size"],
                               "pointerSize": len(lfs_pointer(entry["lfs"]["oid"], entry["size"]))}
            entries.append(item)
        shown = folders if recursive else {f for f in folders if "/" not in f[len(base):]}
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0,
                     "path": f} for f in sorted(shown)]
        self._send(200, entries)

    # --- uploads --------------------------------------------------------------------------------
    def _preupload(self, data: dict, rev: str, body: dict) -> None:
        sha, files = self.server.hub.store.files(data, rev)
        out = []
        for f in body["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = (f["size"] >= 10 * 2**20 or b"\0" in sample
                   or any(fnmatch.fnmatch(f["path"].rsplit("/", 1)[-1], p) for p in LFS_PATTERNS))
            entry = files.get(f["path"])
            oid = None if entry is None else (entry["lfs"]["oid"] if entry["lfs"] else entry["oid"])
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": out, "commitOid": sha})

    def _lfs_batch(self, kind: str, repo: str, body: dict) -> None:
        hub = self.server.hub
        self._may_write(repo)
        hub.store.repo(kind, repo)
        objects = []
        for obj in body["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not hub.store.has_lfs(obj["oid"]):
                upload = {"href": f"{hub.cdn_url}/lfs-upload/{obj['oid']}", "header": {}}
                if hub.multipart_bytes and obj["size"] > hub.multipart_bytes:
                    chunk = hub.multipart_bytes
                    parts = -(-obj["size"] // chunk)
                    upload = {"href": f"{hub.url}/lfs-complete/{obj['oid']}",
                              "header": {"chunk_size": str(chunk), **{
                                  str(n): f"{hub.cdn_url}/lfs-part/{obj['oid']}/{n}"
                                  for n in range(1, parts + 1)}}}
                item["actions"] = {"upload": upload, "verify": {
                    "href": f"{hub.url}/lfs-verify/{obj['oid']}", "header": {}}}
            objects.append(item)
        self._send(200, {"transfer": "basic", "objects": objects},
                   content_type="application/vnd.git-lfs+json")

    def _complete_multipart(self, oid: str, body: dict) -> None:
        store = self.server.hub.store
        folder = store.root / "parts" / oid
        parts = sorted(body["parts"], key=lambda p: p["partNumber"])
        blob = b"".join((folder / str(p["partNumber"])).read_bytes() for p in parts)
        if hashlib.sha256(blob).hexdigest() != oid:
            raise HubError(400, "the parts do not add up to the object")
        store.lfs_path(oid).write_bytes(blob)
        shutil.rmtree(folder, ignore_errors=True)
        self._send(200, {"ok": True})

    def _commit(self, kind: str, repo: str, rev: str, record: dict) -> None:
        store = self.server.hub.store
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        record["json"] = [{**x, "value": {k: v for k, v in x["value"].items() if k != "content"}}
                          for x in lines]
        header = next(x["value"] for x in lines if x["key"] == "header")
        with store.lock:
            data = store.repo(kind, repo)
            if rev not in data["refs"]:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            head, files = store.files(data, rev)
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(files)
            for op in lines:
                value = op["value"]
                if op["key"] == "file":
                    files[value["path"]] = store.put_blob(base64.b64decode(value["content"]))
                elif op["key"] == "lfsFile":
                    if not store.has_lfs(value["oid"]):
                        raise HubError(400, "Your push was rejected because an LFS pointer pointed "
                                            f"to a file that does not exist ({value['path']})")
                    pointer = lfs_pointer(value["oid"], value["size"])
                    files[value["path"]] = {"oid": git_blob_oid(pointer), "size": value["size"],
                                            "lfs": {"oid": value["oid"]}}
                elif op["key"] == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif op["key"] == "deletedFolder":
                    files = {p: e for p, e in files.items()
                             if not p.startswith(value["path"].rstrip("/") + "/")}
            sha = store.new_commit(data, head, files, header["summary"])
            data["refs"][rev] = sha
            store.save(kind, repo, data)
        self._send(200, {"success": True, "commitOid": sha, "hookOutput": "", "pullRequestUrl": None,
                         "commitUrl": f"{self._url(kind, repo)}/commit/{sha}"})

    # --- downloads ------------------------------------------------------------------------------
    def _resolve(self, kind: str, repo: str, rev: str, path: str) -> None:
        hub = self.server.hub
        sha, files = hub.store.files(self._readable(kind, repo), rev)
        entry = files.get(path)
        if entry is None:
            raise_ = HubError(404, "Entry not found", "EntryNotFound")
            headers = {"X-Error-Code": raise_.code, "X-Error-Message": raise_.message, "X-Repo-Commit": sha}
            return self._send(404, {"error": raise_.message}, headers)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'}
        if entry["lfs"]:
            sha256 = entry["lfs"]["oid"]
            return self._send(302, None, {**headers, "X-Linked-Etag": f'"{sha256}"',
                                          "X-Linked-Size": entry["size"],
                                          "Location": f"{hub.cdn_url}/lfs-objects/{sha256}"})
        self._send(200, hub.store.content(entry).read_bytes(), {**headers, "Accept-Ranges": "bytes"},
                   content_type="application/octet-stream")

    # --- the CDN: LFS bytes in and out, no token needed (signed URLs on the real Hub) --------------
    def _cdn(self, segs: list[str], record: dict) -> None:
        hub = self.server.hub
        if segs[0] == "lfs-objects" and self.command in ("GET", "HEAD"):
            path = hub.store.lfs_path(segs[1])
            if not path.exists():
                raise HubError(404, "no such object")
            blob = path.read_bytes()
            found = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if found:
                end = int(found[2]) if found[2] else len(blob) - 1
                part = blob[int(found[1]):end + 1]
                return self._send(206, part, {"Content-Range": f"bytes {found[1]}-{end}/{len(blob)}"},
                                  content_type="application/octet-stream")
            return self._send(200, blob, {"Accept-Ranges": "bytes", "ETag": f'"{segs[1]}"'},
                              content_type="application/octet-stream")
        if self.command != "PUT" or segs[0] not in ("lfs-upload", "lfs-part"):
            raise HubError(404, f"no route {self.path}")
        if hub.should_cut():
            return self._cut(record)
        blob = self._body()
        record["body_len"] = len(blob)
        if segs[0] == "lfs-part":
            folder = hub.store.root / "parts" / segs[1]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / segs[2]).write_bytes(blob)
            return self._send(200, b"", {"ETag": f'"{hashlib.md5(blob).hexdigest()}"'})
        if hashlib.sha256(blob).hexdigest() != segs[1]:
            raise HubError(400, "content does not match the oid")
        tmp = hub.store.lfs_path(segs[1]).with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(hub.store.lfs_path(segs[1]))
        self._send(200, b"")

    def _cut(self, record: dict) -> None:
        """Read half of the body, then drop the connection without an answer."""
        length = int(self.headers.get("Content-Length") or 2)
        self.rfile.read(max(1, length // 2))
        record["cut"] = True
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, role: str, hub: HubServer):
        super().__init__((host, 0), Handler)
        self.role, self.hub = role, hub


class HubServer:
    """The Hub at `url` (127.0.0.1) and its CDN at `cdn_url` (127.0.0.2), one store on disk."""

    def __init__(self, root: Path, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None,
                 multipart_bytes: int | None = None):
        self.store = Store(Path(root))
        self.tokens, self.orgs, self.multipart_bytes = tokens, orgs or {}, multipart_bytes
        self.requests: list[dict] = []
        self._cut_after: int | None = None
        self._ok_uploads = 0
        self._lock = threading.Lock()
        self._servers = [_Server("127.0.0.1", "hub", self), _Server("127.0.0.2", "cdn", self)]
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.2:{self._servers[1].server_address[1]}"

    def namespaces(self, user: str) -> set[str]:
        return {user, *self.orgs.get(user, [])}

    def cut_uploads(self, after: int) -> None:
        """Let `after` more LFS uploads arrive whole; cut every later one mid-body."""
        with self._lock:
            self._cut_after, self._ok_uploads = after, 0

    def heal(self) -> None:
        self._cut_after = None

    def should_cut(self) -> bool:
        with self._lock:
            if self._cut_after is None or self._ok_uploads < self._cut_after:
                self._ok_uploads += 1
                return False
            return True

    def lfs_objects(self) -> set[str]:
        return {p.name for p in (self.store.root / "lfs").iterdir() if not p.name.endswith(".tmp")}

    def puts(self) -> list[str]:
        """The LFS objects whose uploads arrived whole, in order (cut ones excluded)."""
        return [r["path"].split("/")[2] for r in self.requests
                if r["method"] == "PUT" and r["path"].startswith("/lfs-upload/") and not r.get("cut")]

    def files(self, repo: str, kind: str = "model", rev: str = "main") -> dict[str, dict]:
        return self.store.files(self.store.repo(kind, repo), rev)[1]

    def __enter__(self) -> Self:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
