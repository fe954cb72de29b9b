"""Why a run stopped part-way, as a message: `disk_full_error(...)`, `interrupted_error(...)`.

A full disk (ENOSPC, or a quota: EDQUOT) and Ctrl-C stop a run in the middle of a stage. Neither
loses finished work: finished stages keep their manifests, and a resumable stage keeps its
resume state (generate's shards, train's checkpoints), so the message says what was kept and
that running the same command again resumes. Libraries report a full disk in different ways
(pyarrow: OSError errno 28; safetensors: SafetensorError "No space left on device (os error
28)"; Ray: a task error wrapping either), so `is_disk_full` reads errno and words, through the
chain of causes. torch.save reports a failed write with no errno at all ("file write failed",
or "unexpected pos ..." from an iostream error): that counts as a full disk when the disk
holding the run directory is nearly full (under NEARLY_FULL_BYTES free) afterwards.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

from distill.pipeline.errors import Interrupted, RunStopped
from distill.pipeline.store import RESUME_STATE

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded",
                   f"os error {errno.ENOSPC})", f"os error {errno.EDQUOT})")
WRITE_FAILED_WORDS = ("file write failed", "iostream error", "unexpected pos")  # torch.save
NEARLY_FULL_BYTES = 16 * 2**20


def is_disk_full(exc: BaseException, where: Path | None = None) -> bool:
    """True when `exc`, or an exception it was raised from or while handling, is a full disk; a
    write failure without an errno (torch.save) is one when the disk holding `where` is nearly
    full."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return True
        if any(words in str(cause) for words in DISK_FULL_WORDS):
            return True
        if where is not None and any(w in str(cause) for w in WRITE_FAILED_WORDS) \
                and _nearly_full(where):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _nearly_full(where: Path) -> bool:
    try:
        return shutil.disk_usage(where).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def kept(finished: list[str], stage: str, out_dir: Path | None) -> str:
    """'kept: finished stages prompts, generate; generate's 3 finished shards (in DIR)'."""
    parts = [f"finished stages {', '.join(finished)}" if finished else "no finished stage"]
    # resume state lives in the stage folder or in the run's cache (cache/<stage>-<settings>/)
    folders = [] if out_dir is None else [out_dir / s for s in RESUME_STATE] + [
        d / s for d in sorted((out_dir.parent / "cache").glob(f"{stage}-*")) for s in RESUME_STATE]
    for folder in folders:
        state = folder.name
        if folder.is_dir():
            n = sum(1 for p in folder.iterdir() if not p.name.startswith("."))
            if n:
                what = state if n > 1 else state[:-1]
                parts.append(f"{stage}'s {n} finished {what} (in {folder})")
    return "kept: " + "; ".join(parts)


def _free(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:,.1f} MiB free there now"
    except OSError:
        return "free space unknown"


def disk_full_error(exc: BaseException, root: Path, stage: str, finished: list[str],
                    out_dir: Path | None) -> RunStopped:
    """The message for a full disk while `stage` ran in the run directory `root`."""
    where = getattr(exc, "filename", None) or root
    return RunStopped(
        f"the disk is full: stage {stage!r} could not write in {root} ({str(exc).strip()[:200]}; "
        f"on the disk holding {where}: {_free(Path(where) if Path(where).exists() else root)}).\n"
        f"  {kept(finished, stage, out_dir)}",
        fix="free space on that disk (or raise the quota), then run the same command again: it "
            f"resumes from what was kept and redoes only {stage!r} onwards")


def interrupted_error(stage: str, finished: list[str], out_dir: Path | None) -> Interrupted:
    """The message for Ctrl-C while `stage` ran."""
    return Interrupted(f"interrupted during stage {stage!r}.\n  {kept(finished, stage, out_dir)}",
                       fix="run the same command again: it resumes from what was kept")
