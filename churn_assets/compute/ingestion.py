"""Raw ingestion and contract validation per customer shard on a Dask cluster.

Each weekly batch of landing files (``chunk_weeks`` weeks of one table) becomes one task per shard. A task
reads every file of the batch from the shared landing folder, keeps the rows of its shard and validates them
with ``ingestion.ingest.validate_weeks`` — the local engine's code, row numbers in the file kept — against
the keys already stored outside the batch (the shard's part of them, from the warehouse, handed over as a
Parquet file in the stage's exchange folder under ``home`` — not inside the task graph, whose size would
grow with the stored keys, and a file survives the loss of a worker). A row's shard is
:func:`~churn_assets.compute.cluster.shard_of` of the table's key column (``customer_id``; ``invoice_id``
for billing, ``ticket_id`` for support tickets), so every key uniqueness rule is decided inside one shard
exactly as in one pass; a row whose key is missing or not an integer goes to shard 0 (it is rejected by
the contract there). The run process merges each file's shards (``merge_shard_files``) and stores the batch
with ``store_weeks``: the same raw rows, the same quarantine rows and the same kept-previous decisions as
the local engine, in one transaction per batch.

Every task reads the whole files of its batch (I/O grows with the shard count; the validation, the costly
part, is split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import polars as pl

from churn_assets.compute.cluster import shard_of
from churn_assets.compute.shards import stage_folder
from churn_assets.ingestion.contract_files import ContractOptions
from churn_assets.ingestion.ingest import (
    IngestReport,
    WeekFile,
    merge_shard_files,
    raise_broken,
    store_weeks,
    validate_weeks,
)
from churn_assets.storage.warehouse import stored_keys
from data_contracts.raw_tables import RAW_CONTRACTS

if TYPE_CHECKING:
    from distributed import Client


def shard_key(table: str) -> str:
    """The column whose value decides a row's shard: the first key column that is not ``week_start``."""
    return next(k for k in RAW_CONTRACTS[table][1] if k != "week_start")


def row_shards(frame: pl.DataFrame, table: str, shards: int) -> np.ndarray:
    """The shard of every row of ``frame`` (0 for a missing, null or non-integer key)."""
    key = shard_key(table)
    if key not in frame.columns:
        return np.zeros(frame.height, np.int32)
    ids = frame.get_column(key).cast(pl.Int64, strict=False)
    valid = ids.is_not_null() & (ids.fill_null(0) >= 0)
    out = shard_of(ids.fill_null(0).clip(lower_bound=0).to_numpy(), shards)
    return np.where(valid.to_numpy(), out, 0).astype(np.int32)


def _selector(table: str, shard: int, shards: int) -> Callable[[pl.DataFrame], pl.Series]:
    return lambda chunk: pl.Series(row_shards(chunk, table, shards) == shard)


def validate_shard(
    landing_dir: Path,
    table: str,
    weeks: list[str],
    stored: Path | None,
    options: ContractOptions,
    shard: int,
    shards: int,
) -> list[WeekFile]:
    """Task: the shard's rows of the batch ``weeks`` validated (``validate_weeks``) against the keys
    stored outside the batch in the Parquet file ``stored`` (None: nothing stored yet)."""
    keys = None if stored is None else pl.read_parquet(stored)
    return validate_weeks(landing_dir, table, weeks, keys, options, select=_selector(table, shard, shards))


def _stored_key_files(
    stored: pl.DataFrame | None, table: str, shards: int, folder: Path
) -> list[Path | None]:
    """The keys stored outside a batch split by shard into ``folder/shard=<k>.parquet`` (None: nothing is
    stored yet, the local engine's ``stored_keys`` answer)."""
    if stored is None:
        return [None] * shards
    folder.mkdir(parents=True, exist_ok=True)
    keyed = stored.with_columns(pl.Series("__shard", row_shards(stored, table, shards)))
    parts = keyed.partition_by("__shard", as_dict=True, include_key=False)
    paths: list[Path | None] = []
    for k in range(shards):
        path = folder / f"shard={k}.parquet"
        parts.get((k,), stored.clear()).write_parquet(path)  # a shard without stored keys: an empty file
        paths.append(path)
    return paths


def ingest_partitions_on_cluster(
    con: duckdb.DuckDBPyConnection,
    client: Client,
    landing_dir: Path,
    table: str,
    weeks: Sequence[str],
    *,
    home: Path,
    shards: int,
    chunk_weeks: int = 13,
    max_reject_share: float | None = None,
    options: ContractOptions | None = None,
) -> IngestReport:
    """``ingestion.ingest.ingest_partitions`` with each batch validated per customer shard on ``client``'s
    workers; the same stored rows, quarantine and report counts. ``report.shard_rows``: rows read per shard.
    ``home``: the storage root every worker reaches (the stored keys' exchange folder)."""
    options = options or ContractOptions()
    report = IngestReport(table=table, weeks=list(weeks), shard_rows=[0] * shards)
    ordered = sorted(weeks)
    for start in range(0, len(ordered), chunk_weeks):
        chunk = ordered[start : start + chunk_weeks]
        with stage_folder(home, f"ingest-{table}") as stage:
            parts = _stored_key_files(
                stored_keys(con, table, excluding_weeks=chunk), table, shards, stage / "stored_keys"
            )
            results: list[list[WeekFile]] = client.gather(
                client.map(
                    validate_shard,
                    [landing_dir] * shards,
                    [table] * shards,
                    [chunk] * shards,
                    parts,
                    [options] * shards,
                    list(range(shards)),
                    [shards] * shards,
                    pure=False,
                )
            )
        for k, files in enumerate(results):
            report.shard_rows[k] += sum(f.outcome.rows or 0 for f in files)
        merged = [
            merge_shard_files(table, [results[k][i] for k in range(shards)], options.sample_rows)
            for i in range(len(chunk))
        ]
        store_weeks(con, table, merged, report, max_reject_share, options)
    raise_broken(table, report)
    return report


__all__ = ["ingest_partitions_on_cluster", "row_shards", "shard_key", "validate_shard"]
