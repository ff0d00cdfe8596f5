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
from churn_assets.cli.deploy import deploy_app
from churn_assets.cli.features import features_app
from churn_assets.cli.output import err

app = typer.Typer(
    help=(
        "churnops: customer-churn MLOps on Dagster.\n\n"
        "Start with `churnops simulate`, then `churnops run` and `churnops train` (or `churnops demo` for "
        "the whole story). Commands with --json print exactly one JSON document on stdout."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # main() turns errors into one line; CHURNOPS_DEBUG=1 re-raises
)
pipeline.register(app)
app.add_typer(contracts_app, name="contracts", rich_help_panel="Data")
app.add_typer(features_app, name="features", rich_help_panel="Data")
modeling.register(app)
serving.register(app)
monitoring.register(app)
app.add_typer(deploy_app, name="deploy", rich_help_panel="Deployment")


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Bad arguments and unexpected errors are one line on stderr (exit 2 / 1);
    ``CHURNOPS_DEBUG=1`` shows the traceback of an unexpected error."""
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored click) usage and parameter errors
        code = exc.exit_code
        if type(exc).__name__ != "NoArgsIsHelpError":  # a bare group: typer has printed its help
            ctx = getattr(exc, "ctx", None)
            see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _error_line(exc.format_message() + see)
    except typer.Abort:
        _error_line("aborted")
        code = 1
    except Exception as exc:  # the last line of defence of a command-line tool
        if os.environ.get("CHURNOPS_DEBUG"):
            raise
        message = (str(exc).strip().splitlines() or [""])[0]
        _error_line(f"{type(exc).__name__}: {message}", hint=" (CHURNOPS_DEBUG=1 shows the traceback)")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def _error_line(message: str, hint: str = "") -> None:
    err.print(Text.assemble(("error: ", "red"), message, (hint, "dim")), highlight=False, soft_wrap=True)
