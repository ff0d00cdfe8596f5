"""The ``churnops`` typer app: every command group registered on one app, and the console entry point.

Command modules import only typer, rich and each other at import time; each command imports the
domain, Dagster, MLflow ... it needs when it runs, so ``churnops --help`` stays fast
(``tests/code/test_cli.py`` guards that importing the CLI loads none of the heavy libraries).
"""

from __future__ import annotations

import os
import sys

import typer
from rich.text import Text

from churn_assets.cli import modeling, monitoring, pipeline, serving
from churn_assets.cli.contracts import contracts_app
from churn_assets.cli.features import features_app
from churn_assets.cli.output import err

app = typer.Typer(
    help=(
        "churnops: customer-churn MLOps on Dagster.\n\n"
        "Start with `churnops simulate`, then `churnops run` and `churnops train` (or `churnops demo` for "
        "the whole story). Commands with --json print exactly one JSON document on stdout."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
pipeline.register(app)
app.add_typer(contracts_app, name="contracts", rich_help_panel="Data")
app.add_typer(features_app, name="features", rich_help_panel="Data")
modeling.register(app)
serving.register(app)
monitoring.register(app)


def main() -> None:
    """Console entry point: an unexpected error is one line on stderr (``CHURNOPS_DEBUG=1``: traceback)."""
    try:
        app()
    except Exception as exc:  # the last line of defence of a command-line tool
        if os.environ.get("CHURNOPS_DEBUG"):
            raise
        message = (str(exc).strip().splitlines() or [""])[0]
        err.print(
            Text.assemble(("error: ", "red"), f"{type(exc).__name__}: {message}"),
            Text(" (CHURNOPS_DEBUG=1 shows the traceback)", style="dim"),
            sep="",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
