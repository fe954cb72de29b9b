"""`distill publish` and `distill report`: act on a finished run directory (registered in cli.py).

    distill publish runs/quickstart --repo-id ORG/NAME [--public] [--revision BRANCH]
                    [--adapter-only] [--overwrite] [--endpoint URL] [--no-push]
    distill report runs/quickstart [--open]

`publish` does what the publish stage does (workflows.stages.publish.publish_run) with the run's
recipe (`recipe.json`, written by `distill run`) and these options over its `publish` section;
it pushes unless --no-push. The hub token is the client's (HF_TOKEN or `hf auth login`).
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from distill.pipeline.errors import DistillError


def load_run_recipe(run_dir: Path):
    """The recipe a run was made with (its recipe.json), validated."""
    from distill.workflows.recipe import Recipe

    path = run_dir / "recipe.json"
    if not path.exists():
        raise DistillError(f"{run_dir} has no recipe.json (runs made before it was recorded)",
                           fix=f"run `distill run RECIPE --run-dir {run_dir}` again: finished "
                               "stages are skipped and the recipe is recorded")
    return Recipe.model_validate(json.loads(path.read_text()))


def publish(run_dir: Path = typer.Argument(..., help="A run directory of `distill run`."),
            repo_id: str | None = typer.Option(None, "--repo-id", help="ORG/NAME of the student "
                                                  "(the dataset is ORG/NAME-data)."),
            private: bool | None = typer.Option(None, "--private/--public", help=(
                "Visibility of repos it creates (default: the recipe's, private).")),
            revision: str | None = typer.Option(None, "--revision", help="Branch to publish to."),
            adapter_only: bool = typer.Option(False, "--adapter-only", help="Publish the LoRA "
                                              "adapter instead of the merged model."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace a revision or local "
                                           "folder that holds another publication."),
            endpoint: str | None = typer.Option(None, "--endpoint", help="Hub URL (default: the "
                                                   "recipe's, else HF_ENDPOINT, else the Hub)."),
            push: bool = typer.Option(True, "--push/--no-push", help="Upload, or only write the "
                                      "local folders.")) -> None:
    """Publish a run's student and SFT set (with cards) to a hub, as the publish stage does."""
    from distill.pipeline.store import open_run
    from distill.workflows.cli import _fail, _quiet_libraries, console
    from distill.workflows.stages.publish import publish_run

    _quiet_libraries()
    try:
        store = open_run(run_dir)
        recipe = load_run_recipe(run_dir)
        changes = {"push": push, "adapter_only": adapter_only or recipe.publish.adapter_only,
                   "overwrite": overwrite or recipe.publish.overwrite}
        for key, value in (("repo_id", repo_id), ("private", private), ("revision", revision),
                           ("endpoint", endpoint)):
            if value is not None:
                changes[key] = value
        cfg = recipe.publish.model_copy(update=changes)
        info = publish_run(store, recipe, cfg)
    except DistillError as err:
        _fail(err)
    console.print(f"model folder:   {info['model_dir']}\ndataset folder: {info['dataset_dir']}",
                  markup=False, soft_wrap=True)
    for pushed in info["pushed"]:
        console.print(f"pushed {pushed['kind']} {pushed['repo_id']}@{pushed['revision']}: "
                      f"{pushed['url']} ({pushed['transfer']})", markup=False, soft_wrap=True)


def report(run_dir: Path = typer.Argument(..., help="A run directory of `distill run`."),
           open_: bool = typer.Option(False, "--open", help="Open the page in a browser.")) -> None:
    """Write the run's report: report/index.html (one self-contained page) and summary.md."""
    import webbrowser

    from distill.pipeline.store import open_run
    from distill.workflows.cli import _fail, console
    from distill.workflows.report import write_report

    try:
        files = write_report(open_run(run_dir))
    except DistillError as err:
        _fail(err)
    console.print(f"report: {files[0]}\nsummary: {files[1]}", markup=False, soft_wrap=True)
    if open_ and not webbrowser.open(files[0].resolve().as_uri()):
        console.print("no browser found here; open the file above in one", markup=False)
