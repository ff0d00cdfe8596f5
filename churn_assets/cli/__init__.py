"""The ``churnops`` command line (typer + rich), one module per command group.

``main`` (the app and entry point), ``pipeline`` (simulate, run, train, demo), ``contracts``,
``features``, ``modeling`` (train-table, experiments, promote, rollback, audit), ``serving`` (serve,
bento-build, rollout), ``monitoring`` (status); ``output`` holds the consoles, the ``--json``
contract and one-line errors.
"""

from churn_assets.cli.main import app, main

__all__ = ["app", "main"]
