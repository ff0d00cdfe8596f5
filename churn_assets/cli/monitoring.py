"""Monitoring commands of ``churnops``: ``status [--json]``, ``report [--week W] [--open]``, ``metrics serve``."""

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


def report_cmd(
    week: Annotated[
        str | None,
        typer.Option("--week", help="Week key (its Monday, YYYY-MM-DD); default: the newest monitored week."),
    ] = None,
    open_it: Annotated[bool, typer.Option("--open", help="Open the report in a web browser.")] = False,
) -> None:
    """Write the weekly HTML monitoring report (drift, AUC trend, rollout, traffic) and print its path."""
    import datetime as dt
    import webbrowser

    from churn_assets.monitoring.html_report import newest_week, write_weekly_report
    from churn_assets.settings import get_settings
    from churn_assets.storage.warehouse import Warehouse

    settings = get_settings()
    try:
        chosen = dt.date.fromisoformat(week) if week is not None else None
    except ValueError:
        raise typer.BadParameter(f"{week!r} is not a week key (YYYY-MM-DD)", param_hint="--week") from None
    with Warehouse.of(settings).connect() as con:
        chosen = chosen or newest_week(con)
        if chosen is None:
            err.print("no monitored week yet: run the weekly production (churnops demo / simulate + run)")
            raise typer.Exit(1)
        path = write_weekly_report(settings, con, chosen)
    typer.echo(str(path))
    if open_it:
        webbrowser.open(path.as_uri())


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
    app.command("report", rich_help_panel=PANEL)(report_cmd)
    app.add_typer(metrics_app, name="metrics", rich_help_panel=PANEL)
