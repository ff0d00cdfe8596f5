"""Blocking contract checks on every raw asset: a failure stops the features downstream."""

import dagster as dg

from churn_assets.defs.keys import raw_asset_key
from churn_assets.defs.metadata import markdown_table
from churn_assets.defs.partitions import weekly_partitions
from churn_assets.defs.resources import WarehouseResource
from churn_assets.ingestion.contract_check import check_stored_partitions
from churn_assets.settings import Settings
from data_contracts.raw_tables import RAW_CONTRACTS, RAW_TABLES
from data_contracts.validation import DateBounds


def _build_contract_check(table: str) -> dg.AssetChecksDefinition:
    contract, _ = RAW_CONTRACTS[table]

    @dg.asset_check(
        asset=raw_asset_key(table),
        name="contract",
        blocking=True,
        partitions_def=weekly_partitions,
        description=(
            f"Re-validates the stored partitions of raw.{table} against `{contract.__name__}` and "
            "fails when rows break it or when too many landed rows were quarantined."
        ),
    )
    def _check(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        settings: dg.ResourceParam[Settings],
    ) -> dg.AssetCheckResult:
        max_share = settings.contracts.max_quarantine_share
        with warehouse.warehouse().connect(read_only=True) as con:
            result = check_stored_partitions(
                con,
                table,
                context.partition_keys,
                max_quarantine_share=max_share,
                date_bounds=DateBounds(*settings.contract_date_bounds),
            )
        return dg.AssetCheckResult(
            passed=result.passed,
            description=result.summary(),
            metadata={
                "stored_rows": result.stored_rows,
                "quarantined_rows": result.quarantined_rows,
                "quarantine_share": result.quarantine_share,
                "max_quarantine_share": max_share,
                "stored_violations": dg.MetadataValue.md(
                    "\n".join(f"- {v}" for v in result.stored_violations) or "none"
                ),
                "quarantine_by_rule": dg.MetadataValue.md(
                    markdown_table(result.quarantine_by_rule) or "none"
                ),
                "quarantine_sample": dg.MetadataValue.md(markdown_table(result.quarantine_sample) or "none"),
            },
        )

    return _check


contract_checks = [_build_contract_check(table) for table in RAW_TABLES]
