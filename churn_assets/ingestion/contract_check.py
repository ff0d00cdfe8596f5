"""The contract check of stored raw partitions (what the blocking Dagster asset checks run).

A raw partition passes when (1) every stored row satisfies its contract, re-validated from the
warehouse, and (2) the share of rows its landing files lost to quarantine is at most the
configured maximum — a mostly-broken upstream file means something upstream is wrong, and
features must not be computed from the rest as if nothing happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import polars as pl

from churn_assets.storage.warehouse import quarantine_rows, query_pl
from data_contracts.raw_tables import RAW_CONTRACTS, polars_schema
from data_contracts.validation import DateBounds, validate_batch


@dataclass
class ContractCheckResult:
    table: str
    weeks: list[str]
    stored_rows: int = 0
    stored_violations: list[str] = field(default_factory=list)
    quarantined_rows: int = 0
    max_quarantine_share: float = 0.0
    quarantine_by_rule: list[dict[str, object]] = field(default_factory=list)
    quarantine_sample: list[dict[str, object]] = field(default_factory=list)

    @property
    def quarantine_share(self) -> float:
        total = self.stored_rows + self.quarantined_rows
        return self.quarantined_rows / total if total else 0.0

    @property
    def passed(self) -> bool:
        return not self.stored_violations and self.quarantine_share <= self.max_quarantine_share

    def summary(self) -> str:
        if self.passed:
            return (
                f"raw.{self.table}: {self.stored_rows:,} stored rows satisfy the contract; "
                f"{self.quarantined_rows:,} quarantined ({self.quarantine_share:.3%})"
            )
        reasons = list(self.stored_violations)
        if self.quarantine_share > self.max_quarantine_share:
            reasons.append(
                f"{self.quarantined_rows:,} rows quarantined ({self.quarantine_share:.2%}) "
                f"> allowed {self.max_quarantine_share:.2%}"
            )
        return f"raw.{self.table} FAILED its contract: " + "; ".join(reasons)


def check_stored_partitions(
    con: duckdb.DuckDBPyConnection,
    table: str,
    weeks: Sequence[str],
    *,
    max_quarantine_share: float,
    chunk_weeks: int = 13,
    sample_size: int = 5,
    date_bounds: DateBounds | None = None,
) -> ContractCheckResult:
    if table not in RAW_CONTRACTS:
        raise KeyError(f"no contract for table {table!r}")
    result = ContractCheckResult(table=table, weeks=list(weeks), max_quarantine_share=max_quarantine_share)
    cols = ", ".join(f'"{c}"' for c in polars_schema(table))
    ordered = sorted(weeks)
    for start in range(0, len(ordered), chunk_weeks):
        chunk = ordered[start : start + chunk_weeks]
        stored = query_pl(
            con, f"SELECT {cols} FROM raw.{table} WHERE week_start IN (SELECT unnest($1::DATE[]))", [chunk]
        )
        result.stored_rows += stored.height
        if stored.height:
            outcome = validate_batch(table, stored, date_bounds=date_bounds, keep_originals=False)
            result.stored_violations.extend(outcome.describe())
    rejected = quarantine_rows(con, table, ordered)
    if rejected.height:
        result.quarantined_rows = rejected.select(pl.struct("source_file", "row_index").n_unique()).item()
        by_rule = (
            rejected.group_by("column_name", "rule")
            .agg(pl.len().alias("rows"))
            .sort(["rows", "column_name", "rule"], descending=[True, False, False])
        )
        result.quarantine_by_rule = by_rule.to_dicts()
        result.quarantine_sample = (
            rejected.head(sample_size).select("week_start", "column_name", "rule", "failure_case").to_dicts()
        )
    return result
