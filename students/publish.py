"""Publishing: `publish_student(model_dir, rows, lineage, cfg, hub_dir, repo_id)` -> hub folders.

`<hub_dir>/<repo_id>/`: the student as safetensors (merged; or, with `adapter_only`, the LoRA
adapter whose config names the base by its hub id) with tokenizer, chat template and generation
config, a model card (README.md, students.cards) and lineage.json. `<hub_dir>/<repo_id>-data/`:
the SFT rows as Parquet (`data/`, config `default`, split train), the rejected rows with their
stage and reason (`rejected/`, config `rejected`) and a dataset card. With `push` both go to a
hub through huggingface_hub (students.hub: token, resumable transfers, no silent overwrite).

A folder records the run that published it (`.distill/owner.json`, never uploaded); a publish
for another run stops instead of replacing it, unless `overwrite`. Each folder is built as
`.<name>.staging<pid>` beside it and renamed into place, so readers never see half a model. A
publish killed mid-copy leaves its staging folder behind; the next publish into the same hub
folder removes every stale one (its owner pid is not alive, or that pid now belongs to a process
that started after the folder was made), never a live publish's.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.pipeline.errors import DistillError
from distill.pipeline.keys import RUNTIME
from distill.pipeline.store import write_atomic, write_json, write_parquet

OWNER = Path(".distill") / "owner.json"


class PublishConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Run the publish stage.")
    hub_dir: str = Field("hub", description="Local folder of the published repos, relative to the "
                                            "run directory (so each run has its own).")
    repo_id: str | None = Field(None, description=(
        "ORG/NAME of the student on the hub (the dataset is ORG/NAME-data); null: "
        "'<recipe name>-student' in the token's namespace."))
    push: bool = Field(False, description="Also upload to a hub with huggingface_hub.")
    endpoint: str | None = Field(None, description="Hub URL for push (null: HF_ENDPOINT or the "
                                                   "default).")
    private: bool = Field(True, description="Create pushed repos as private.")
    revision: str | None = Field(None, description="Branch to publish to (made from main when "
                                                   "missing); null: main.")
    adapter_only: bool = Field(False, description="LoRA/QLoRA: publish the adapter (its base named "
                                                  "in the card) instead of the merged model.")
    include_rejected: bool = Field(True, description="Add the rejected rows with their reasons as "
                                                     "the dataset's second config, `rejected`.")
    license: str = Field("apache-2.0", description="License of the student in its card.")
    dataset_license: str | None = Field(None, description="License of the teacher's outputs as its "
                                                          "terms state it; null: `license`.")
    overwrite: bool = Field(False, json_schema_extra=RUNTIME, description=(
        "Replace a hub revision or a local folder that holds another publication."))
    transfer: Literal["auto", "xet", "lfs"] = Field("auto", json_schema_extra=RUNTIME, description=(
        "Upload protocol; auto: Xet on huggingface.co, LFS elsewhere."))


def check_owner(folder: Path, owner: str, overwrite: bool) -> None:
    """Stop unless `folder` is missing, was published by `owner`, or `overwrite` is set."""
    if overwrite or not folder.exists():
        return
    try:
        found = json.loads((folder / OWNER).read_text())["run_dir"]
    except (OSError, ValueError, KeyError):
        found = "an unknown run"
    if found != owner:
        raise DistillError(f"{folder} holds the student published by {found}; a publish never "
                           "replaces another run's",
                           fix="pass --overwrite (publish.overwrite: true) to replace it, or "
                               "publish elsewhere (--repo-id, publish.hub_dir)")


def _copy_student(src: Path, staging: Path, cfg: PublishConfig, lineage: dict,
                  adapter_dir: Path | None) -> None:
    """The merged model, or the adapter (base by hub id) with the model's generation config."""
    if not cfg.adapter_only:
        shutil.copytree(src, staging, ignore=shutil.ignore_patterns("checkpoint-*", "adapter"))
        return
    if adapter_dir is None or not adapter_dir.is_dir():
        raise DistillError(f"adapter_only: this run trained method {lineage.get('method')!r}, "
                           "which has no adapter", fix="publish the merged model (drop "
                           "--adapter-only), or train with method lora or qlora")
    shutil.copytree(adapter_dir, staging,
                    ignore=shutil.ignore_patterns("training_args.bin", "README.md"))
    if (src / "generation_config.json").exists():
        shutil.copy2(src / "generation_config.json", staging / "generation_config.json")
    config = json.loads((staging / "adapter_config.json").read_text())
    base = lineage.get("student_base_hub_id") or lineage.get("student_base")
    config["base_model_name_or_path"] = base
    write_json(staging / "adapter_config.json", config)


def publish_student(model_dir: Path, sft_rows: pd.DataFrame, lineage: dict, cfg: PublishConfig,
                    hub_dir: Path, repo_id: str, *, adapter_dir: Path | None = None,
                    rejected: pd.DataFrame | None = None, owner: str | None = None,
                    example_prompt: str | None = None) -> dict:
    """Write the model and dataset folders into hub_dir (atomically per folder), refusing to
    replace another owner's; push them if `cfg.push`. Returns where they went."""
    from distill.students.cards import CardNames, dataset_card, model_card

    if cfg.push and "/" not in repo_id:
        from huggingface_hub import HfApi

        from distill.students.hub import hub_user

        repo_id = f"{hub_user(HfApi(endpoint=cfg.endpoint or None))}/{repo_id}"
    model_out, data_out = hub_dir / repo_id, hub_dir / f"{repo_id}-data"
    if owner is not None:
        check_owner(model_out, owner, cfg.overwrite)
        check_owner(data_out, owner, cfg.overwrite)
    if not cfg.include_rejected or (rejected is not None and rejected.empty):
        rejected = None  # no `rejected` config without rows (datasets cannot read an empty one)
    names = CardNames(model_repo=repo_id, dataset_repo=f"{repo_id}-data", license=cfg.license,
                      dataset_license=cfg.dataset_license or cfg.license,
                      adapter_only=cfg.adapter_only,
                      **({"example_prompt": example_prompt} if example_prompt else {}))
    marker = json.dumps({"run_dir": owner}) if owner else None
    with staged(model_out) as staging:
        _copy_student(model_dir, staging, cfg, lineage, adapter_dir)
        write_atomic(staging / "README.md", model_card(lineage, names))
        write_json(staging / "lineage.json", lineage)
        if marker:
            write_atomic(staging / OWNER, marker)
    with staged(data_out) as staging:
        write_parquet(sft_rows, staging / "data" / "train-00000.parquet")
        if rejected is not None:
            write_parquet(rejected, staging / "rejected" / "train-00000.parquet")
        write_atomic(staging / "README.md", dataset_card(lineage, names, sft_rows, rejected))
        if marker:
            write_atomic(staging / OWNER, marker)
    pushed = []
    if cfg.push:
        from distill.students.hub import push

        for folder, kind in ((model_out, "model"), (data_out, "dataset")):
            pushed.append(push(folder, f"{repo_id}-data" if kind == "dataset" else repo_id, kind,
                               endpoint=cfg.endpoint, private=cfg.private, revision=cfg.revision,
                               overwrite=cfg.overwrite, transfer=cfg.transfer))
    return {"repo_id": repo_id, "model_dir": str(model_out), "dataset_dir": str(data_out),
            "pushed": pushed}


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
