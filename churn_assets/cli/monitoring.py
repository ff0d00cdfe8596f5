"""Monitoring commands of ``churnops``: ``status [--json]``, ``metrics serve``."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from churn_assets.cli.output import JsonOpt, emit_json, err, json_output


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


metrics_app = typer.Typer(
    help='Model-quality gauges for Prometheus (docs/monitoring.md, "Prometheus and Grafana").',
    no_args_is_help=True,
)


@metrics_app.command("serve")
def metrics_serve_cmd(
    host: Annotated[
        str | None, typer.Option("--host", help="Address (default: monitoring.metrics_host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port (default: monitoring.metrics_port).")
    ] = None,
) -> None:
    """Serve the quality gauges the weekly monitoring step writes (AUC, estimated AUC, drifted features) on
    /metrics, read afresh on every scrape; runs until interrupted."""
    from churn_assets.monitoring.prometheus import serve
    from churn_assets.settings import get_settings

    settings = get_settings()
    server, _thread = serve(settings, host, port)
    address, bound = server.server_address[:2]
    err.print(
        f"serving {settings.monitoring_metrics_path} on http://{address}:{bound}/metrics", highlight=False
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


PANEL = "Monitoring"


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the ``churnops`` app."""
    app.command("status", rich_help_panel=PANEL)(status_cmd)
    app.add_typer(metrics_app, name="metrics", rich_help_panel=PANEL)
