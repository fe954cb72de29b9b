"""The engine: recipe schema, stage runner, run store, row accounting, Ray setup, CLI.

`from distill.pipeline import open_run; open_run("runs/quickstart").stage("curate").to_pandas()`
"""
from distill.pipeline.store import open_run

__all__ = ["open_run"]
