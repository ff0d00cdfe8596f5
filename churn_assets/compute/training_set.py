"""The point-in-time training set built per customer shard on a Dask cluster, and its sharded layout.

Layout (what the trainer reads; ``TrainingWorkdir.training_set``)::

    <training_dir>/training_set.parquet              local engine: one Parquet file
    <training_dir>/training_set.parquet/             dask engine: a directory, one file per customer shard
        shard-00000.parquet                          the rows of the customers of shard 0, ...
        shard-00001.parquet
    <training_dir>/training_set.json                 metadata, identical for both engines
                                                     (+ "shard_rows": rows per shard)

Each shard file has the columns of the local file (``customer_id, as_of, period, split, churned``, the 45
features; string features and ``split`` dictionary-encoded) with its rows ordered by as-of date, then
customer. The union of the shard files is the local file's rows (the row order differs: shard after
shard). Readers: ``pyarrow.dataset.dataset(path)``, ``polars.read_parquet(path)``,
``dask.dataframe.read_parquet(path)`` (one partition per shard file) and ``training_set.read_split`` all
take either form; :func:`training_set_files` lists the files in shard order, e.g. for a worker per shard.

Building it: the run process plans the set over the whole warehouse (``training_set.plan_training_set``:
snapshot dates, usable label dates, data end), exports ``raw.churn_events`` and the offline store's
groups per shard, and every worker runs ``training_set.training_rows`` — the local engine's code — on
its shard and writes its file into a staging directory next to the published one. Only when every shard
succeeded and the merged metadata passes ``check_training_set`` does the staging directory replace the
published set (``TrainingWorkdir.publish_training_set``); otherwise the published set is unchanged.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from churn_assets.compute.features import shard_connection
from churn_assets.compute.shards import export_shards, stage_folder
from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.modeling.training_set import (
    TrainingPlan,
    check_training_set,
    describe_training_set,
    plan_training_set,
    summarize_rows,
    training_rows,
    write_training_set,
)
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import Settings
from churn_assets.timeline import Timeline

if TYPE_CHECKING:
    from distributed import Client

_INPUTS = ["raw.churn_events", *(f"features.{g.name}" for g in FEATURE_GROUPS)]


def training_shard_path(dataset: Path, shard: int) -> Path:
    """The file of ``shard`` in a sharded training set directory."""
    return dataset / f"shard-{shard:05d}.parquet"


def training_set_files(dataset: Path) -> list[Path]:
    """The Parquet files of a training set in shard order: the file itself for the local engine's."""
    if dataset.is_dir():
        return sorted(dataset.glob("shard-*.parquet"))
    return [dataset] if dataset.exists() else []


def training_shard(
    stage: Path, shard: int, plan: TrainingPlan, staging: Path, threads: int
) -> tuple[dict[str, Any], dict[str, int]]:
    """Task: one shard's training rows, written to its file in ``staging`` (rewritten whole on a rerun);
    the shard's ``summarize_rows`` summary and check counts."""
    con = shard_connection(stage, shard, _INPUTS, threads)
    try:
        frame, checks = training_rows(con, plan)
    finally:
        con.close()
    write_training_set(frame, training_shard_path(staging, shard))
    return summarize_rows(frame), checks


def build_training_set_on_cluster(
    con: duckdb.DuckDBPyConnection,
    client: Client,
    timeline: Timeline,
    settings: Settings,
    workdir: TrainingWorkdir,
) -> dict[str, Any]:
    """Build, check and publish the sharded training set (see the module doc); its metadata."""
    plan = plan_training_set(con, timeline, settings)
    shards, threads = settings.compute.shards, settings.compute.threads_per_worker
    staging = workdir.root / f".training_set.staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        with stage_folder(settings.home, "training-set") as stage:
            for table in _INPUTS:
                export_shards(con, table, stage, shards)
            results = client.gather(
                client.map(
                    training_shard,
                    [stage] * shards,
                    list(range(shards)),
                    [plan] * shards,
                    [staging] * shards,
                    [threads] * shards,
                    pure=False,
                )
            )
        meta = describe_training_set(plan, [r[0] for r in results], [r[1] for r in results])
        check_training_set(meta)  # before anything is published
        workdir.publish_training_set(staging, meta)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


__all__ = ["build_training_set_on_cluster", "training_set_files", "training_shard", "training_shard_path"]
