"""Recipes: `load_recipe("workflows/recipes/quickstart.yaml", ["train.epochs=2"]) -> Recipe`.

A recipe is plain YAML validated by pydantic models that forbid unknown keys, so a typo stops the
run before any work with the key's path and the nearest valid name. Sections: prompts,
select_prompts (optional), teacher, curate, train, onpolicy (optional), evaluate, publish, plan.
`--set a.b=value` overrides parse `value` as YAML.

Includes: a top-level `extends: _base.yaml` (a path relative to the including file; chains
allowed) loads that file first and deep-merges this one over it: mappings merge key by key,
lists and scalars (null too) replace. `--set` applies after the merge. Files whose name starts
with `_` are bases, not recipes: `recipe_files` and `distill recipes` skip them.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill.data.curate import CurateConfig
from distill.data.difficulty import SelectPromptsConfig
from distill.data.sources import SourceConfig, check_names
from distill.data.trace_sources import TraceSourceConfig
from distill.evaluation.evaluate import EvalConfig
from distill.pipeline.errors import RecipeError
from distill.pipeline.keys import RUNTIME, fingerprint
from distill.students.config import TrainConfig
from distill.students.onpolicy_config import OnPolicyConfig
from distill.students.publish import PublishConfig
from distill.teachers.config import TeacherConfig
from distill.workflows.plan_config import PlanConfig


class PromptsConfig(BaseModel):
    """Where the prompts come from and which columns hold the problem and the reference answer:
    one `source`, or several `sources` (each with its own columns, data.sources)."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(None, description="A JSON Lines or Parquet file, or `bundled:NAME` for a set that ships.",
                               json_schema_extra=fingerprint("prompt_source"))
    sources: list[SourceConfig] = Field(default_factory=list, description=(
        "Several sources instead of `source`, each with its columns, a name tagged on its rows "
        "(`source`), a task kind and a weight in the training mix (data.sources)."))
    problem_column: str = Field("problem", description="Column with the problem text.")
    answer_column: str | None = Field("answer", description="Column with the reference answer (null: none).")
    id_column: str | None = Field(None, description="Column with a stable id; null: a hash of the problem.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts (after dropping held-out ones).")
    traces: TraceSourceConfig | None = Field(None, description=(
        "The source already holds answers (bring your own traces): which columns; the teacher "
        "is not asked for these rows (data.trace_sources). null: prompts only."))

    @model_validator(mode="after")
    def _one_form(self) -> "PromptsConfig":
        if (self.source is None) == (not self.sources):
            raise ValueError("give either `source` (one file or bundled set) or `sources` (a list "
                             "of them, each with a name), not both or neither")
        if self.sources and (self.traces is not None or self.limit is not None):
            raise ValueError("with `sources`, set `traces` and `limit` on each source, not on prompts")
        check_names(self.sources)
        return self


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="Ray address; null: $RAY_ADDRESS, else a local Ray.",
                                json_schema_extra=RUNTIME)
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (null: all).",
                                 json_schema_extra=RUNTIME)


class Recipe(BaseModel):
    """A whole distillation workflow, from prompts to a published student."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Short name of the recipe; names the run directory by default.")
    description: str = Field("", description="One line shown by `distill recipes`.",
                             json_schema_extra=RUNTIME)
    hardware: str = Field("", description="What this recipe needs to run (for people, not checked).",
                          json_schema_extra=RUNTIME)
    seed: int = Field(0, description="Seed for sampling engines and training.")
    ray: RayConfig = Field(default_factory=RayConfig)
    prompts: PromptsConfig
    select_prompts: SelectPromptsConfig | None = Field(None, description=(
        "Difficulty filtering before the teacher runs (the select_prompts stage); null: off."))
    teacher: TeacherConfig
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig
    onpolicy: OnPolicyConfig | None = Field(None, description=(
        "On-policy distillation after SFT (the onpolicy stage); null: off."))
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig, description=(
        "Prices and stated speeds for `distill plan` (changes no result)."))


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {dotted}: {key!r} is not a section", fix="set a leaf key")
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides (value parsed as YAML) to a recipe tree, in place."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r} has no '='", fix="write --set key.sub=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid field names of the model that the error location `loc` points into."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


Layers = list[tuple[str, dict]]
INCLUDE_KEY = "extends"


def _read_mapping(path: Path) -> dict:
    if path.is_dir():
        inside = ", ".join(sorted(p.name for p in path.glob("*.yaml"))[:5]) or "none"
        raise RecipeError(f"{path} is a folder, not a recipe file (YAML files in it: {inside})",
                          fix="give the path of one YAML recipe; `distill recipes` lists the ones "
                              "that ship")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        line = path.read_bytes().count(b"\n", 0, exc.start) + 1
        byte = exc.object[exc.start]
        raise RecipeError(f"{path}: not UTF-8 text (line {line}, byte {byte:#04x})",
                          fix="save the recipe as UTF-8 (a YAML recipe is plain text)") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read it ({exc.strerror or exc})",
                          fix="give a readable YAML recipe file") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}", fix="fix the YAML syntax") from None
    if not isinstance(tree, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping, got {type(tree).__name__}",
                          fix="start from workflows/recipes/quickstart.yaml")
    return tree


def read_layers(path: str | Path) -> Layers:
    """`[(file, mapping), ...]`, base first: the recipe and the chain of files it `extends`."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe file {path} does not exist", fix="give a path to a YAML "
                          "recipe; `distill recipes` lists the ones that ship")
    layers: Layers = []
    chain = [path.resolve()]
    while True:
        tree = _read_mapping(path)
        layers.insert(0, (str(path), tree))
        base = tree.pop(INCLUDE_KEY, None)
        if base is None:
            return layers
        if not isinstance(base, str) or not base.strip():
            raise RecipeError(f"{path}: `{INCLUDE_KEY}` must name one file, got {base!r}",
                              fix=f"write `{INCLUDE_KEY}: _base.yaml` (relative to {path.parent})")
        nxt = path.parent / base
        if nxt.resolve() in chain:
            loop = " -> ".join(p.name for p in chain + [nxt.resolve()])
            raise RecipeError(f"{path}: `{INCLUDE_KEY}: {base}` makes a cycle ({loop})",
                              fix=f"remove `{INCLUDE_KEY}` from one of these files")
        if not nxt.exists():
            raise RecipeError(f"{path}: `{INCLUDE_KEY}: {base}` names {nxt}, which does not exist",
                              fix="give the base's path relative to the including file's "
                                  f"folder ({path.parent})")
        chain.append(nxt.resolve())
        path = nxt


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` on `base`, mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict):
            below = out.get(key)
            value = deep_merge(below if isinstance(below, dict) else {}, value)
        out[key] = value
    return out


def merge_layers(layers: Layers) -> dict:
    """One recipe tree (not validated) from read_layers' files, each merged over the one before."""
    tree: dict = {}
    for _, layer in layers:
        tree = deep_merge(tree, layer)
    return tree


def recipe_files(folder: Path) -> list[Path]:
    """The runnable recipes under `folder`: every `*.yaml` except bases (names starting `_`)."""
    return sorted(p for p in folder.rglob("*.yaml") if not p.name.startswith("_"))


def _set_by(loc: tuple, layers: Layers) -> str | None:
    """The last layer that set the value at `loc` (the whole path, or a list or scalar above it)."""
    for source, node in reversed(layers):
        for part in loc:
            if not isinstance(node, dict):
                return source
            if part not in node:
                break
            node = node[part]
        else:
            return source
    return None


def explain_validation_error(err: ValidationError, source: str,
                             layers: Layers | None = None) -> RecipeError:
    """Turn pydantic's error into one message per bad key, with the nearest valid key and, for a
    recipe made of several files (`layers`, see read_layers; `--set` last), the one that set it."""
    lines = []
    fixes = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        setter = _set_by(loc, layers or []) if e["type"] != "missing" else None
        where = f" (from {setter})" if setter and setter != source else ""
        if e["type"] == "extra_forbidden":
            valid = _fields_at(Recipe, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            lines.append(f"unknown key `{key}`{where}")
            fixes.append(f"did you mean `{'.'.join(map(str, loc[:-1] + (close[0],)))}`?" if close
                         else f"valid keys here: {', '.join(valid)}")
        elif e["type"] == "missing":
            lines.append(f"missing key `{key}`")
            fixes.append(f"add `{key}` to the recipe")
        else:
            lines.append(f"`{key}`: {e['msg']} (got {e.get('input')!r}){where}")
    header, fix = f"{source}: invalid recipe", "; ".join(fixes) or "correct the values above"
    name = Path(source).name
    if name.startswith("_"):
        header = (f"{source} is a base that recipes include (`{INCLUDE_KEY}: {name}`), "
                  f"not a recipe to run; on its own")
        fix = "run a recipe that extends it (`distill recipes` lists them)"
    return RecipeError(f"{header}:\n  " + "\n  ".join(lines), fix=fix)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read (with its `extends` chain), override and validate a recipe; every problem is a
    RecipeError naming the key (and the file or `--set` that set it)."""
    path = Path(path)
    layers = read_layers(path)
    tree = merge_layers(layers)
    if overrides:
        apply_overrides(tree, overrides)
        layers.append(("--set", apply_overrides({}, overrides)))
    try:
        recipe = Recipe.model_validate(tree)
    except ValidationError as err:
        raise explain_validation_error(err, str(path), layers) from None
    return recipe.model_copy(update={}, deep=True)
