"""Pushing published folders to a Hugging Face-compatible hub: `push(folder, repo, kind, options)`.

Through the real `huggingface_hub` client against `endpoint` (null: HF_ENDPOINT, else the Hub).
The token is the client's: HF_TOKEN or the user's login (`hf auth login`); it is never passed
around, stored or printed here. Rules:
- The token is checked first (whoami); a refused one stops with a message that names where it
  came from, not the token.
- A repo name without an org goes to the token's user. The revision (a branch, default main) is
  created from main when missing (its first publication replaces what it inherited).
- An existing revision is not overwritten unless asked: if it holds files that differ from the
  folder's (or files the folder lacks), the push stops and says which; with `overwrite`, the
  revision is made equal to the folder (stale files deleted). Files equal to the folder's are
  what an earlier, interrupted push of the same folder left, so a re-run resumes.
- Transfers: Xet on huggingface.co (chunks already stored are not sent again), plain LFS on any
  other endpoint (a file whose object already arrived is not sent again; `transfer` overrides).
  A push that breaks off stops with a message; running it again sends only what is missing.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from distill.pipeline.errors import DistillError

LOCAL_ONLY = [".distill/*", ".distill"]  # what a published folder keeps for itself
Transfer = Literal["auto", "xet", "lfs"]


def _token_source() -> str:
    return "HF_TOKEN" if os.environ.get("HF_TOKEN") else "your hub login (hf auth login)"


def _endpoint(api) -> str:
    return api.endpoint.rstrip("/")


@contextmanager
def transfer_mode(mode: Transfer, endpoint: str) -> Iterator[str]:
    """Use Xet or plain LFS for uploads inside the block (the client's switch is a module flag);
    auto: Xet on huggingface.co when hf_xet is installed and not disabled, else LFS."""
    from huggingface_hub import constants
    from huggingface_hub.utils import is_package_available

    old = constants.HF_HUB_DISABLE_XET
    if mode == "auto":
        host = (urlsplit(endpoint).hostname or "").lower()
        on_hub = host in ("huggingface.co", "hf.co") or host.endswith(".huggingface.co")
        mode = "xet" if on_hub and not old and is_package_available("hf_xet") else "lfs"
    constants.HF_HUB_DISABLE_XET = mode == "lfs"
    try:
        yield mode
    finally:
        constants.HF_HUB_DISABLE_XET = old


def _explain(exc: Exception, api, what: str) -> DistillError:
    """A client error as a DistillError naming the thing and the fix (never the token)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = _endpoint(api)
    if isinstance(exc, OfflineModeIsEnabled):
        return DistillError(f"{what}: HF_HUB_OFFLINE is set, so nothing can be sent to {where}",
                            fix="unset HF_HUB_OFFLINE (or publish without pushing: push: false)")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return DistillError(f"{what}: the hub at {where} refused the token from {_token_source()} "
                            "(401: invalid or expired credentials)",
                            fix="set HF_TOKEN to a valid token with write access, or run "
                                "`hf auth login`")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return DistillError(f"{what}: the token from {_token_source()} may not write there "
                            f"({where} answered 403)",
                            fix="use a token with write access to that namespace, or another "
                                "--repo-id")
    root = exc
    while root.__cause__ is not None and not isinstance(root, HfHubHTTPError):
        root = root.__cause__
    if isinstance(root, HfHubHTTPError):
        status = getattr(root.response, "status_code", "an error")
        detail = str(root).strip().splitlines()[0][:200] if str(root).strip() else ""
        return DistillError(f"{what}: the hub at {where} answered {status} ({detail})",
                            fix="check that the endpoint (--endpoint, publish.endpoint, "
                                "HF_ENDPOINT) is a Hugging Face-compatible hub and the repo id is "
                                "right; then run the same command again")
    return DistillError(f"{what}: the upload to {where} broke off ({root.__class__.__name__}: "
                        f"{str(root)[:200]}); what arrived stays on the hub",
                        fix="run the same command again: files that arrived are not sent again")


def hub_user(api) -> str:
    """The token's user name; a DistillError when there is no token or the hub refuses it."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise DistillError(f"publish: pushing to {_endpoint(api)} needs a hub token, and none "
                           "is set",
                           fix="set HF_TOKEN (a write token) or run `hf auth login`; or publish "
                               "without pushing (push: false)")
    try:
        return api.whoami()["name"]
    except Exception as exc:  # noqa: BLE001  (explained)
        raise _explain(exc, api, "publish: checking the hub token") from None


def _local_files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != ".distill"}


def differing_files(api, repo_id: str, kind: str, revision: str, folder: Path) -> list[str]:
    """Files at `revision` that the folder does not hold with the same content (its own
    .gitattributes aside): what a push would overwrite or leave stale."""
    from huggingface_hub import RepoFile
    from huggingface_hub.utils import sha

    local = _local_files(folder)
    differ = []
    for entry in api.list_repo_tree(repo_id, repo_type=kind, revision=revision, recursive=True):
        if not isinstance(entry, RepoFile) or entry.path == ".gitattributes":
            continue
        path = local.get(entry.path)
        if path is None:
            differ.append(f"{entry.path} (not in this publication)")
            continue
        if entry.lfs is not None:
            with open(path, "rb") as f:
                same = sha.sha_fileobj(f).hex() == entry.lfs.sha256
        else:
            same = sha.git_hash(path.read_bytes()) == entry.blob_id
        if not same:
            differ.append(f"{entry.path} (different content)")
    return differ


def _prepare(api, repo_id: str, kind: str, revision: str, private: bool) -> tuple[str, bool]:
    """Create the repo (if missing) and the branch (from main, if missing): (the full repo id,
    whether the branch is new, so what it holds is main's and replacing it overwrites nothing)."""
    url = api.create_repo(repo_id, repo_type=kind, private=private, exist_ok=True)
    repo_id = url.repo_id
    if revision == "main":
        return repo_id, False
    branches = {b.name for b in api.list_repo_refs(repo_id, repo_type=kind).branches}
    if revision in branches:
        return repo_id, False
    api.create_branch(repo_id, repo_type=kind, branch=revision, exist_ok=True)
    return repo_id, True


def push(folder: Path, repo_id: str, kind: str, *, endpoint: str | None, private: bool,
         revision: str | None, overwrite: bool, transfer: Transfer = "auto") -> dict:
    """Upload `folder` as `kind` repo `repo_id` at `revision`; returns {repo_id, kind, revision,
    commit, url, transfer}. DistillError when the token is refused, the revision holds another
    publication (unless `overwrite`), or the upload breaks off (run again to resume)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint or None)
    revision = revision or "main"
    user = hub_user(api)
    if "/" not in repo_id:
        repo_id = f"{user}/{repo_id}"
    what = f"publishing {kind} {repo_id}@{revision}"
    try:
        repo_id, new_branch = _prepare(api, repo_id, kind, revision, private)
        differ = differing_files(api, repo_id, kind, revision, folder)
        overwrite = overwrite or new_branch
    except Exception as exc:  # noqa: BLE001  (explained)
        raise _explain(exc, api, what) from None
    if differ and not overwrite:
        listed = ", ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
        raise DistillError(f"{what}: that revision already holds another publication ({listed}); "
                           "it is not overwritten unless asked",
                           fix="pass --overwrite (publish.overwrite: true) to replace it, or "
                               "publish elsewhere with --revision BRANCH or --repo-id ORG/NAME")
    with transfer_mode(transfer, _endpoint(api)) as mode:
        try:
            info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=kind,
                                     revision=revision, ignore_patterns=LOCAL_ONLY,
                                     delete_patterns=["*"] if differ else None,
                                     commit_message=f"distill: publish {folder.name}")
        except Exception as exc:  # noqa: BLE001  (explained)
            raise _explain(exc, api, what) from None
    return {"repo_id": repo_id, "kind": kind, "revision": revision, "commit": info.oid,
            "url": info.commit_url, "transfer": mode}
