"""Monitoring commands of ``churnops``: ``status [--json]``."""

from __future__ import annotations

import typer

from churn_assets.cli.output import JsonOpt, emit_json, json_output


def status_cmd(as_json: JsonOpt = False) -> None:
    """The MLOps status report: champion, performance vs threshold, drift, traffic, last action."""
    with json_output(as_json):
        from churn_assets.monitoring.status import build_status_report, render_status
        from churn_assets.settings import get_settings

        report = build_status_report(get_settings())
    if as_json:
        emit_json(report)
    else:
        typer.echo(render_status(report))


PANEL = "Monitoring"


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the ``churnops`` app."""
    app.command("status", rich_help_panel=PANEL)(status_cmd)
