"""Monitoring commands of the ``churnops`` CLI: ``status [--json]``.

``churn_assets/cli.py`` calls :func:`register`. With ``--json`` stdout is one JSON object.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from churn_assets.monitoring.status import build_status_report, render_status
from churn_assets.settings import get_settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def status_cmd(as_json: JsonOpt = False) -> None:
    """The MLOps status report: champion, performance vs threshold, drift, traffic, last action."""
    report = build_status_report(get_settings())
    typer.echo(json.dumps(report, default=str) if as_json else render_status(report))


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the ``churnops`` app."""
    app.command("status")(status_cmd)
