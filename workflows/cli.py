"""The `distill` command line.

    distill run workflows/recipes/quickstart.yaml [--run-dir DIR] [--set train.epochs=2 ...]
    distill status DIR
    distill show DIR STAGE [--rejected] [--limit N]
    distill report DIR [--open]
    distill publish DIR [--repo-id ORG/NAME] [--private/--public] [--revision BRANCH]
                    [--adapter-only] [--overwrite]
    distill plan RECIPE.yaml [--run-dir DIR] [--set plan.gpu_hour_price=2.5]
    distill recipes
"""
from __future__ import annotations

import fcntl
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from distill.pipeline.errors import DistillError, Interrupted, RunStopped
from distill.pipeline.secrets import RedactedStream, redacted_traceback
from rich.console import Console
from rich.markup import escape
from rich.table import Table


class _Typer(typer.Typer):
    """Uncaught errors print Python's traceback with secrets masked, and exit 1."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            sys.stderr.write(redacted_traceback(exc))
            raise SystemExit(1) from None


app = _Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
             help="Distil a reasoning teacher into small students, stage by stage, resumably.")
console = Console(highlight=False, file=RedactedStream())  # no secret is ever printed
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def _quiet_libraries() -> None:
    """Library chatter (weight-loading bars, INFO logs) off unless DISTILL_VERBOSE=1."""
    import os

    if os.environ.get("DISTILL_VERBOSE", "") in ("", "0"):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def _fail(err: DistillError) -> None:
    """Print `err` (no traceback; for a stopped run, the command that resumes it) and exit."""
    label = "[bold yellow]stopped:[/]" if isinstance(err, RunStopped) else "[bold red]error:[/]"
    console.print(f"{label} {escape(str(err))}")
    if isinstance(err, RunStopped):
        console.print(f"  resume: distill {escape(shlex.join(sys.argv[1:]))}")
    raise typer.Exit(err.exit_code)


def choose_run_dir(name: str, given: Path | None) -> Path:
    """--run-dir, else `$DISTILL_RUNS_DIR/<name>`, else `runs/<name>`. Inside a Ray job a run
    directory relative to the job's working directory is refused: that directory is a temporary
    copy that Ray deletes after the job, and the run would go with it."""
    import os

    if given is None and os.environ.get("DISTILL_RUNS_DIR"):
        given = Path(os.environ["DISTILL_RUNS_DIR"]) / name
    in_job = bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))  # set by `ray job submit`
    if in_job and (given is None or not given.is_absolute()):
        raise DistillError(
            f"this `distill run` is a Ray job and its run directory "
            f"({given or Path('runs') / name}) would be inside the job's working directory: a "
            "temporary copy that Ray deletes after the job, and the run would be lost with it",
            fix="pass --run-dir on storage every node sees (e.g. --run-dir /shared/runs/NAME), or "
                "set DISTILL_RUNS_DIR for the job (--runtime-env-json '{\"env_vars\": "
                "{\"DISTILL_RUNS_DIR\": \"/shared/runs\"}}')")
    return given or Path("runs") / name


@app.command()
def run(recipe: Path = typer.Argument(..., help="Recipe YAML (see `distill recipes`)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (on storage every node sees); default $DISTILL_RUNS_DIR/<recipe name>, else runs/<recipe name>."),
        set_: list[str] = typer.Option([], "--set", help="Override a recipe key: --set train.epochs=2."),
        retry_errors: bool = typer.Option(False, "--retry-errors", help=(
            "Ask the teacher again for the requests that failed (teacher_error rows)."))) -> None:
    """Run the workflow; stages already done for the same settings are skipped."""
    from distill.pipeline.runner import run_stages
    from distill.pipeline.store import RunStore, write_json
    from distill.workflows.distill import STAGES
    from distill.workflows.fingerprints import resolvers
    from distill.workflows.preflight import preflight
    from distill.workflows.recipe import load_recipe
    from distill.workflows.report import eval_summary, write_report

    _quiet_libraries()
    try:
        loaded = load_recipe(recipe, [*set_, *(["teacher.retry_errors=true"] if retry_errors else [])])
        notes = preflight(loaded, recipe.resolve())
    except DistillError as err:
        _fail(err)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted during the checks, before any stage ran; nothing to keep",
                          fix="run the same command again"))
    for note in notes:
        console.print(f"[yellow]warning:[/] {escape(note)}")
    try:
        store = RunStore(choose_run_dir(loaded.name, run_dir))
    except DistillError as err:
        _fail(err)
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _fail(DistillError(f"another `distill run` is using {store.root}",
                               fix="wait for it, or pass another --run-dir"))
        console.print(f"[bold]distill run[/] {loaded.name} -> {store.root}")
        write_json(store.root / "recipe.json", loaded.model_dump(mode="json"))  # for `publish`
        try:
            run_stages(STAGES, loaded, store, console=console, recipe_path=recipe.resolve(),
                       resolvers=resolvers(recipe.resolve().parent))
        except DistillError as err:
            _fail(err)
    files = write_report(store)
    _print_results(eval_summary(store))
    from distill.workflows.stages.onpolicy import summary_lines

    for line in summary_lines(store):
        console.print(line, markup=False)
    console.print(f"report: {files[0]} (and {files[1].name}; `distill report --open` opens it)",
                  soft_wrap=True)
    if "publish" in store.stage_names():
        info = store.stage("publish").manifest.get("published")
        if info:
            console.print(f"published: {info['model_dir']}")


def _print_results(summary: dict) -> None:
    """The evaluation table, the paired student-minus-base comparison and the rules used."""
    from distill.evaluation.tables import (
        PAIRED_HEADER,
        RESULT_HEADER,
        paired_rows,
        protocol_lines,
        result_rows,
        verdicts,
    )

    if not summary.get("results"):
        return
    for title, header, rows in (
            ("evaluation (pass@1 averaged over n samples, 95% interval)", RESULT_HEADER,
             result_rows(summary["results"])),
            ("student minus base on the same questions (paired 95% interval)", PAIRED_HEADER,
             paired_rows(summary.get("paired")))):
        if not rows:
            continue
        table = Table(title=title)
        for col in header:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for line in protocol_lines(summary.get("protocol")):
        console.print(f"  {line}", markup=False)
    for line in verdicts(summary.get("paired")):
        console.print(f"verdict: {line}", markup=False)


@app.command()
def plan(recipe: Path = typer.Argument(..., help="Recipe YAML (see `distill recipes`)."),
         run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="The run directory the plan is for; the plan and its calibration run go to RUN_DIR/plan/."),
         set_: list[str] = typer.Option([], "--set", help="Override a recipe key: --set plan.gpu_hour_price=2.5.")) -> None:
    """Estimate tokens, teacher throughput, GPU-hours, money, kept rows, disk and time per stage
    from a small calibration run through the real stages (workflows.plan)."""
    from distill.workflows.plan import HEADER, plan_run, stats_lines, table_rows
    from distill.workflows.preflight import preflight
    from distill.workflows.recipe import load_recipe

    _quiet_libraries()
    try:
        loaded = load_recipe(recipe, set_)
        notes = preflight(loaded, recipe.resolve())
        root = choose_run_dir(loaded.name, run_dir)
        for note in notes:
            console.print(f"[yellow]warning:[/] {escape(note)}")
        console.print(f"[bold]distill plan[/] {loaded.name} -> {root / 'plan'}")
        result = plan_run(loaded, recipe.resolve(), root, console)
    except DistillError as err:
        _fail(err)
    table = Table(title=f"plan: {result['prompts']:,} prompts, {result['samples']:,} samples, "
                        f"about {result['kept_rows']:,.0f} kept rows")
    for col in HEADER[:-1]:
        table.add_column(col)
    rows = table_rows(result)
    for row in rows:
        table.add_row(*(escape(c) for c in row[:-1]))
    console.print(table)
    for row in rows:
        if row[-1]:
            console.print(f"  {row[0]}: {row[-1]}", markup=False, soft_wrap=True)
    for line in stats_lines(result):
        console.print(f"  {line}", markup=False, soft_wrap=True)
    console.print(f"plan: {result['files'][1]} (and {Path(result['files'][0]).name})", soft_wrap=True)


@app.command()
def status(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Which stages are done, with their row counts and the funnel by reason."""
    from distill.pipeline.store import open_run
    from distill.workflows.report import ORDER, funnel_rows

    try:
        store = open_run(run_dir)
    except DistillError as err:
        _fail(err)
    table = Table(title=f"{run_dir}")
    for col in ("stage", "state", "rows in", "kept", "rejected", "seconds"):
        table.add_column(col)
    done = store.stage_names()
    for name in ORDER:
        if name not in done:
            table.add_row(name, "not done", "", "", "", "")
            continue
        m = store.stage(name).manifest
        table.add_row(name, "done", f"{m['rows_in']:,}", f"{m['kept']:,}",
                      f"{sum(m['rejected'].values()):,}", f"{m['seconds']:.1f}")
    console.print(table)
    funnel = Table(title="funnel by reason")
    for col in ("stage", "outcome", "rows"):
        funnel.add_column(col)
    for r in funnel_rows(store):
        funnel.add_row(r["stage"], r["outcome"], f"{r['rows']:,}")
    console.print(funnel)


@app.command()
def show(run_dir: Path = typer.Argument(...), stage: str = typer.Argument(...),
         rejected: bool = typer.Option(False, "--rejected", help="Show the rejected rows and reasons."),
         limit: int = typer.Option(20, "--limit", help="Rows to show."),
         columns: Optional[str] = typer.Option(None, "--columns", help="Comma-separated columns.")) -> None:
    """A stage's rows as a table (pandas)."""
    import pandas as pd
    from distill.pipeline.store import open_run

    try:
        frame = open_run(run_dir).stage(stage).to_pandas(rejected=rejected)
    except DistillError as err:
        _fail(err)
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in frame.columns]
        if unknown:
            rows = "rejected" if rejected else "kept"
            _fail(DistillError(f"--columns: {', '.join(map(repr, unknown))} not among the columns "
                               f"of {stage}'s {rows} rows in {run_dir}",
                               fix=f"choose from: {', '.join(map(str, frame.columns))}"))
        frame = frame[wanted]
    with pd.option_context("display.max_columns", 12, "display.width", 200, "display.max_colwidth", 60):
        console.print(frame.head(limit).to_string())
    console.print(f"({len(frame):,} rows{' rejected' if rejected else ''})")


@app.command()
def recipes() -> None:
    """The recipes that ship, one line each (bases, `_*.yaml`, are included by others, not run)."""
    from distill.workflows.recipe import merge_layers, read_layers, recipe_files

    for path in recipe_files(RECIPES_DIR):
        try:
            data = merge_layers(read_layers(path))
        except DistillError as err:
            _fail(err)
        console.print(f"{str(path.relative_to(RECIPES_DIR.parent.parent)):<55} {data.get('description', '')}")


def _register() -> None:
    from distill.workflows.commands import publish, report

    app.command()(report)
    app.command()(publish)


_register()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
