"""Raw source assets: landing files -> contract -> ``raw.<table>`` (rejects -> quarantine)."""

import dagster as dg

from churn_assets.compute.engine import ingest_raw
from churn_assets.defs.keys import LANDING_GROUP, RAW_GROUP, landing_asset_key, raw_asset_key
from churn_assets.defs.metadata import contract_table_schema, markdown_table
from churn_assets.defs.partitions import single_run, weekly_partitions
from churn_assets.defs.resources import ComputeResource, WarehouseResource
from churn_assets.ingestion.contract_files import ContractOptions
from churn_assets.settings import Settings
from data_contracts.raw_tables import RAW_CONTRACTS, RAW_TABLES

landing_specs = [
    dg.AssetSpec(
        key=landing_asset_key(table),
        group_name=LANDING_GROUP,
        kinds={"parquet"},
        description=f"Files dropped by the upstream system: landing/{table}/<week>.parquet (or .csv).",
    )
    for table in RAW_TABLES
]


def _build_raw_asset(table: str) -> dg.AssetsDefinition:
    contract, keys = RAW_CONTRACTS[table]

    @dg.asset(
        key=raw_asset_key(table),
        deps=[landing_asset_key(table)],
        group_name=RAW_GROUP,
        partitions_def=weekly_partitions,
        backfill_policy=single_run,
        kinds={"duckdb", "polars"},
        description=(contract.__doc__ or table).strip()
        + f"\n\nGuarded by the pandera contract `data_contracts.raw_tables.{contract.__name__}`.",
        metadata={
            "table": f"raw.{table}",
            "contract": f"data_contracts.raw_tables.{contract.__name__}",
            "key": ", ".join(keys),
            "dagster/column_schema": contract_table_schema(contract),
        },
    )
    def _raw(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        compute: ComputeResource,
        settings: dg.ResourceParam[Settings],
    ) -> dg.MaterializeResult:
        weeks = context.partition_keys
        with compute.engine() as engine, warehouse.warehouse().connect() as con:
            report = ingest_raw(
                engine,
                con,
                settings.landing_dir,
                table,
                weeks,
                max_reject_share=settings.contracts.max_quarantine_share,
                options=ContractOptions.from_settings(settings),
            )
            engine_meta = engine.metadata()
        if report.shard_rows:
            engine_meta["shard_rows"] = dg.MetadataValue.json(report.shard_rows)
        if report.kept_previous:
            context.log.error(
                f"raw.{table}: weeks {', '.join(report.kept_previous)} rejected too many rows; "
                "their previously stored rows were kept and the contract check will fail"
            )
        for warning in report.warnings:
            context.log.warning(f"raw.{table}: {warning}")
        if report.rows_rejected:
            context.log.warning(
                f"raw.{table}: {report.rows_rejected:,} of {report.rows_in:,} rows quarantined "
                f"({report.quarantine_share:.3%})"
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows_accepted,
                "rows_in": report.rows_in,
                "rows_rejected": report.rows_rejected,
                "quarantine_share": report.quarantine_share,
                "weeks": f"{weeks[0]} .. {weeks[-1]} ({len(weeks)})" if weeks else "none",
                "violations": dg.MetadataValue.md(markdown_table(report.violations) or "none"),
                "weeks_kept_previous": ", ".join(report.kept_previous) or "none",
                "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in report.warnings) or "none"),
                **engine_meta,
            }
        )

    return _raw


raw_assets = [_build_raw_asset(table) for table in RAW_TABLES]
