"""``churnops features list|usage|get``: the feature registry, feature -> model usage, the online store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from churn_assets.cli.output import JsonOpt, emit_json, fail, json_output, out

features_app = typer.Typer(
    help="The feature store: registry, feature -> model usage, online reads.", no_args_is_help=True
)


@features_app.command("list")
def features_list(as_json: JsonOpt = False) -> None:
    """Print the feature registry: groups, features, types, owners, freshness, and each feature's status
    (in use / active / deprecated: unused by every aliased model version for feature_store.deprecate_after_days)."""
    with json_output(as_json):
        from churn_assets.feature_store.registry import registry_rows, render_registry_table
        from churn_assets.modeling.feature_usage import lifecycle
        from churn_assets.settings import get_settings

        _now, verdicts = lifecycle(get_settings())
        by_feature = {v.feature: v for v in verdicts}
        rows = [
            {
                **row,
                "status": by_feature[row["feature"]].status if row["feature"] in by_feature else None,
                "last_used_at": (
                    lu.isoformat()
                    if row["feature"] in by_feature and (lu := by_feature[row["feature"]].last_used_at)
                    else None
                ),
            }
            for row in registry_rows()
        ]
    if as_json:
        emit_json(rows)
    else:
        out.print(render_registry_table(rows))


@features_app.command("usage")
def features_usage(
    feature: Annotated[
        str | None,
        typer.Argument(help="A feature (name or group:feature); default: every feature.", show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which registered model versions (and their aliases) use a feature, its status, and which feature
    groups are shared by several models."""
    with json_output(as_json):
        from churn_assets.modeling.feature_usage import feature_usage
        from churn_assets.settings import get_settings

        try:
            usage = feature_usage(get_settings(), feature)
        except KeyError as exc:
            fail(f"{exc.args[0]} (churnops features list shows the features)")
    if as_json:
        emit_json(usage)
        return
    table = Table(title=f"Feature usage (clock {usage['now'] or '—'})")
    for column in ("feature", "group", "status", "last used", "model versions (aliases)"):
        table.add_column(column, overflow="fold")
    for f in usage["features"]:
        versions = "; ".join(
            f"{v['model_name']} v{v['model_version']}"
            + (f" {v['semver']}" if v["semver"] else "")
            + (f" ({', '.join(v['aliases'])})" if v["aliases"] else "")
            for v in f["versions"]
        )
        table.add_row(
            f["feature"], f["group"], f["status"] or "—", (f["last_used_at"] or "—")[:10], versions or "none"
        )
    out.print(table)
    if feature is None:
        for g in usage["groups"]:
            models = ", ".join(g["models"]) or "no model"
            out.print(f"{g['group']}: {models}{' (shared)' if g['shared'] else ''}", highlight=False)


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
