"""Where the ``churnops`` commands write: consoles, the ``--json`` contract and one-line errors.

The ``--json`` contract, the same for every command that has the option: stdout carries exactly one
JSON document (``json.loads`` of the whole stdout works), everything else -- tables, progress,
warnings, and whatever a library prints -- goes to stderr. :func:`json_output` enforces it for the
duration of a command by pointing both ``sys.stdout`` and file descriptor 1 at stderr (C libraries
such as LightGBM write to the descriptor directly); :func:`emit_json` then writes the document to
the real stdout. A command that stops with an error (:func:`fail`) prints nothing on stdout.

This module imports only typer and rich: ``churnops --help`` must not load the ML stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

# Piped output (CI logs, files) gets wide lines instead of rich's 80-column default. ``file`` is left
# unset so that both consoles follow ``sys.stdout`` / ``sys.stderr`` as they are at write time.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout; tables and progress go to stderr."),
]


def human(as_json: bool) -> Console:
    """The console for human-readable output: stdout, or stderr when stdout is reserved for JSON."""
    return err if as_json else out


@contextlib.contextmanager
def json_output(as_json: bool) -> Iterator[None]:
    """While the block runs with ``as_json``, anything written to stdout goes to stderr instead."""
    if not as_json:
        yield
        return
    sys.stdout.flush()
    try:
        saved_fd: int | None = os.dup(1)
    except OSError:  # no descriptor 1 (embedded interpreters): Python-level redirection only
        saved_fd = None
    if saved_fd is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def emit_json(document: Any) -> None:
    """Write ``document`` as the one JSON document of stdout (``default=str`` for dates, paths)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the command with a one-line error on stderr (exit 2: bad input or missing state)."""
    err.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)
