"""Feature-group assets (offline store) and the online-store materialization."""

import datetime as dt

import dagster as dg

from churn_assets.compute.engine import materialize_features
from churn_assets.defs.keys import (
    FEATURE_KEYS,
    FEATURES_GROUP,
    ONLINE_STORE,
    feature_asset_key,
    raw_asset_key,
)
from churn_assets.defs.metadata import markdown_table
from churn_assets.defs.partitions import single_run, weekly_partitions
from churn_assets.defs.resources import ComputeResource, OnlineStoreResource, WarehouseResource
from churn_assets.feature_store.definitions import FEATURE_GROUPS, FeatureGroup
from churn_assets.feature_store.lifecycle import deprecated_features
from churn_assets.feature_store.materialize import materialize_online
from churn_assets.settings import Settings
from churn_assets.timeline import Timeline


def _spec(group: FeatureGroup) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=feature_asset_key(group.name),
        group_name=FEATURES_GROUP,
        description=f"{group.description}\n\nFeature group `{group.name}` of entity `{group.entity}`.",
        deps=[raw_asset_key(source.split(".", 1)[1]) for source in group.sources],
        kinds={"duckdb"},
        owners=[group.owner],
        tags={"update_frequency": group.update_frequency},
        metadata={
            "entity": group.entity,
            "ttl_days": group.ttl.days,
            "update_frequency": group.update_frequency,
            "sources": ", ".join(group.sources),
            "table": f"features.{group.name}",
            "features": dg.MetadataValue.md(
                markdown_table(
                    [
                        {"feature": f.name, "dtype": f.dtype, "description": f.description}
                        for f in group.features
                    ],
                    limit=50,
                )
            ),
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(name="customer_id", type="int64"),
                    dg.TableColumn(name="event_timestamp", type="timestamp"),
                ]
                + [
                    dg.TableColumn(name=f.name, type=f.dtype, description=f.description)
                    for f in group.features
                ]
            ),
        },
    )


@dg.multi_asset(
    name="feature_groups",
    specs=[_spec(group) for group in FEATURE_GROUPS],
    partitions_def=weekly_partitions,
    backfill_policy=single_run,
    can_subset=False,
)
def feature_groups(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    settings: dg.ResourceParam[Settings],
):
    """Compute the snapshots of every group for the weeks that carry one (see timeline.py), on the
    configured engine (docs/scale_out.md)."""
    timeline = Timeline.from_settings(settings.simulation)
    weeks = [dt.date.fromisoformat(k) for k in context.partition_keys]
    as_of_dates = sorted({d for w in weeks if (d := timeline.snapshot_for_week(w)) is not None})
    with compute.engine() as engine, warehouse.warehouse().connect() as con:
        written = materialize_features(engine, con, as_of_dates)
        engine_meta = engine.metadata()
    if written.shard_rows:
        engine_meta["shard_rows"] = dg.MetadataValue.json(written.shard_rows)
    for group in FEATURE_GROUPS:
        yield dg.MaterializeResult(
            asset_key=feature_asset_key(group.name),
            metadata={
                "dagster/row_count": written.rows[group.name],
                "snapshots": dg.MetadataValue.md(
                    ", ".join(d.isoformat() for d in as_of_dates) or "none in these weeks"
                ),
                "seconds": round(written.seconds, 2),
                **engine_meta,
            },
        )


@dg.asset(
    key=ONLINE_STORE,
    group_name=FEATURES_GROUP,
    deps=FEATURE_KEYS,
    kinds={"sqlite", "redis"},
    description=(
        "Latest feature values of every active customer in the online store (TTL per group); with "
        "`feature_store.retire_deprecated`, the features the `features_not_deprecated` check last judged "
        "deprecated are written as null (retired)."
    ),
)
def online_features(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    online_store: OnlineStoreResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    with warehouse.warehouse().connect() as con:
        retired = deprecated_features(con) if settings.feature_store.retire_deprecated else {}
        store = online_store.open()
        try:
            report = materialize_online(con, store, retired)
        finally:
            store.close()
    return dg.MaterializeResult(
        metadata={
            "backend": online_store.backend,
            "as_of": report.as_of.isoformat() if report.as_of else "none",
            "customers": report.customers,
            "dagster/row_count": report.customers,
            "rows_by_group": dg.MetadataValue.json(report.rows),
            "retired_features": dg.MetadataValue.json(report.retired),
            "seconds": round(report.seconds, 2),
        }
    )
