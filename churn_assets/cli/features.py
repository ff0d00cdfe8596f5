"""``churnops features list|get``: the feature registry and the online store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from churn_assets.cli.output import JsonOpt, emit_json, fail, json_output, out

features_app = typer.Typer(help="The feature store: registry and online reads.", no_args_is_help=True)


@features_app.command("list")
def features_list(as_json: JsonOpt = False) -> None:
    """Print the feature registry: groups, features, types, owners, freshness."""
    with json_output(as_json):
        from churn_assets.feature_store.registry import registry_rows, render_registry_table

        rows = registry_rows()
    if as_json:
        emit_json(rows)
    else:
        out.print(render_registry_table(rows))


@features_app.command("get")
def features_get(
    customer_ids: Annotated[list[int], typer.Argument(help="Customer ids.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Read customers' features from the online store, with staleness."""
    with json_output(as_json):
        from churn_assets.feature_store.online_read import read_online
        from churn_assets.settings import get_settings

        settings = get_settings()
        if not settings.warehouse_path.exists():
            fail(
                f"no feature store at {settings.warehouse_path}: run `churnops simulate` and `churnops run` first"
            )
        try:
            payload = read_online(settings, customer_ids)
        except RuntimeError as exc:  # the feature store is empty
            fail(str(exc))
    if as_json:
        emit_json(payload)
        return
    for customer in payload["customers"]:
        table = Table(title=f"customer {customer['customer_id']}")
        table.add_column("feature")
        table.add_column("value")
        for name, value in customer["features"].items():
            table.add_row(name, "[dim]expired/missing" if value is None else str(value))
        out.print(table)
        out.print(f"staleness: {customer['staleness']}")
