"""Publishing: `publish_student(model_dir, card, cfg)` writes the student to a hub folder.

The local hub folder holds `<hub_dir>/<repo_id>/` with safetensors weights, tokenizer, chat
template, a model card (README.md with YAML metadata and the lineage: teacher, recipe, data
counts, evaluation table) and lineage.json; and `<hub_dir>/<repo_id>-data/` with the curated SFT
set as Parquet and its dataset card. With `push: true` the same folders are uploaded with
huggingface_hub to `endpoint` (a Hugging Face-compatible hub).

Each folder is built as `.<name>.staging<pid>` beside it and renamed into place, so readers never
see half a model. A publish killed mid-copy leaves its staging folder behind; the next publish
into the same hub folder removes every stale one (its owner pid is not alive, or that pid now
belongs to a process that started after the folder was made), never a live publish's.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.pipeline.store import write_atomic, write_json, write_parquet


class PublishConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Run the publish stage.")
    hub_dir: str = Field("hub", description="Local hub folder (relative to the run directory's parent).")
    repo_id: str | None = Field(None, description="Repository name; null: '<recipe name>-student'.")
    push: bool = Field(False, description="Also upload to a hub with huggingface_hub.")
    endpoint: str | None = Field(None, description="Hub URL for push (null: HF_ENDPOINT or the default).")
    private: bool = Field(True, description="Create pushed repos as private.")
    license: str = Field("apache-2.0", description="License in the cards.")


def _eval_section(lineage: dict) -> str:
    """The evaluation table, the paired comparison and the rules (evaluation.tables)."""
    from distill.evaluation.tables import markdown

    if not lineage.get("eval"):
        return "not evaluated"
    return markdown({"results": lineage["eval"], "paired": lineage.get("eval_paired"),
                     "protocol": lineage.get("eval_protocol")})


def model_card(lineage: dict, repo_id: str, license: str) -> str:
    """README.md for the student: YAML front matter, lineage and the evaluation table."""
    import yaml

    meta = {"license": license, "base_model": lineage["student_base"], "library_name": "transformers",
            "tags": ["distillation", "reasoning", "distill"], "datasets": [f"{repo_id}-data"]}
    counts = lineage["data_counts"]
    return "\n".join([
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {repo_id}", "",
        f"A student distilled from **{lineage['teacher']}** into **{lineage['student_base']}** "
        f"({lineage['method']}) by the `{lineage['recipe']}` recipe.", "",
        "## Data", "",
        f"- prompts: {counts.get('prompts')}; teacher samples: {counts.get('traces')}; "
        f"kept after curation: {counts.get('curated')}; trained on: {counts.get('trained')}",
        f"- rejected by reason: {json.dumps(counts.get('rejected', {}), sort_keys=True)}", "",
        "## Evaluation", "",
        _eval_section(lineage), "",
        "## Lineage", "", "```json", json.dumps(lineage, indent=2, sort_keys=True, default=str), "```", ""])


def dataset_card(lineage: dict, repo_id: str, license: str, rows: int) -> str:
    return "\n".join([
        "---", f"license: {license}", "tags: [distillation, reasoning, sft]", "---", "",
        f"# {repo_id}-data", "",
        f"{rows} curated SFT rows sampled from {lineage['teacher']} by the `{lineage['recipe']}` "
        "recipe. Columns: prompt, reasoning, answer_text and the teacher's metadata.", "",
        "Rejected rows and their reasons are kept in the run directory (`distill show RUN curate "
        "--rejected`).", ""])


def publish_student(model_dir: Path, sft_rows: pd.DataFrame, lineage: dict, cfg: PublishConfig,
                    hub_dir: Path, repo_id: str) -> dict:
    """Write model and dataset folders into hub_dir (atomically per folder); push if asked."""
    model_out, data_out = hub_dir / repo_id, hub_dir / f"{repo_id}-data"
    with staged(model_out) as staging:
        shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("checkpoint-*", "adapter"))
        write_atomic(staging / "README.md", model_card(lineage, repo_id, cfg.license))
        write_json(staging / "lineage.json", lineage)
    with staged(data_out) as staging:
        write_parquet(sft_rows, staging / "data" / "train-00000.parquet")
        write_atomic(staging / "README.md", dataset_card(lineage, repo_id, cfg.license, len(sft_rows)))
    pushed = push_folders([model_out, data_out], repo_id, cfg) if cfg.push else []
    return {"model_dir": str(model_out), "dataset_dir": str(data_out), "pushed": pushed}


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """`with staged(out) as tmp:` build the folder at `tmp` (not yet created); on success it
    replaces `out`, on an error it is removed. Stale staging folders of `out` go first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    staging = final.with_name(f".{final.name}.staging{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_staging(final: Path) -> list[Path]:
    """Remove the `.<name>.staging<pid>` folders of `final` that no live publish owns; returns
    those removed."""
    import psutil

    pattern = re.compile(rf"\.{re.escape(final.name)}\.staging(\d+)")
    removed = []
    for folder in final.parent.iterdir() if final.parent.is_dir() else ():
        found = pattern.fullmatch(folder.name)
        if found is None:
            continue
        pid = int(found[1])
        try:  # pid reuse: a process that started after the folder was last written is not its owner
            started = psutil.Process(pid).create_time()
            live = pid != os.getpid() and started <= folder.stat().st_mtime + 1
        except (psutil.Error, FileNotFoundError):
            live = False
        if not live:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def push_folders(folders: list[Path], repo_id: str, cfg: PublishConfig) -> list[str]:
    """Upload with huggingface_hub (create_repo + upload_folder) to cfg.endpoint."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=cfg.endpoint)
    urls = []
    for folder, kind in zip(folders, ("model", "dataset")):
        name = repo_id if kind == "model" else f"{repo_id}-data"
        api.create_repo(name, repo_type=kind, private=cfg.private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=name, repo_type=kind)
        urls.append(str(getattr(info, "commit_url", info)))
    return urls
