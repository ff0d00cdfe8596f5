"""The engine a run's heavy stages use, and those stages behind one call whichever engine it is.

:func:`open_engine` gives an :class:`Engine`: ``local`` (no cluster: every stage in this process) or
``dask`` (a client of the configured cluster, every worker's access to ``home`` checked). The stage
functions here take it and call the local engine's function or its sharded counterpart, so the Dagster
assets stay one call and record the same metadata (engine, worker count, per-shard rows) either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from churn_assets.compute.cluster import dask_client, engine_label, worker_count
from churn_assets.settings import Settings

if TYPE_CHECKING:
    from distributed import Client

    from churn_assets.feature_store.materialize import MaterializeReport
    from churn_assets.ingestion.contract_files import ContractOptions
    from churn_assets.ingestion.ingest import IngestReport
    from churn_assets.modeling.workdir import TrainingWorkdir
    from churn_assets.timeline import Timeline


@dataclass(frozen=True)
class Engine:
    """Where this run's heavy stages execute: ``client`` is None for the local engine."""

    settings: Settings
    client: Client | None

    @property
    def label(self) -> str:
        return engine_label(self.settings.compute)

    @property
    def workers(self) -> int:
        """Dask workers now (0 for the local engine)."""
        return 0 if self.client is None else worker_count(self.client)

    def map_tasks(self, function: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``function(*a)`` for every ``a`` of ``args``, results in order: one after another in this
        process (local), or as tasks on the cluster (dask; a task whose worker dies is rerun)."""
        if self.client is None:
            return [function(*a) for a in args]
        return list(self.client.gather(self.client.map(function, *zip(*args, strict=True), pure=False)))

    def metadata(self) -> dict[str, Any]:
        """What every stage records: ``engine``, ``workers`` and (dask) ``shards``."""
        meta: dict[str, Any] = {"engine": self.label, "workers": self.workers}
        if self.client is not None:
            meta["shards"] = self.settings.compute.shards
        return meta


@contextlib.contextmanager
def open_engine(settings: Settings) -> Iterator[Engine]:
    """The engine of ``settings.compute`` for the duration of the block (a ``local:N`` cluster is
    started and stopped with it). Bad configuration raises ``ComputeConfigError`` naming the setting."""
    if settings.compute.engine == "local":
        yield Engine(settings, None)
        return
    with dask_client(settings.compute, storage_root=settings.home) as client:
        yield Engine(settings, client)


def ingest_raw(
    engine: Engine,
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    table: str,
    weeks: Sequence[str],
    *,
    max_reject_share: float | None,
    options: ContractOptions,
) -> IngestReport:
    """Validate and store the landing files of ``weeks`` (``ingest_partitions``, or per customer shard
    on the cluster: the same raw rows and quarantine)."""
    if engine.client is None:
        from churn_assets.ingestion.ingest import ingest_partitions

        return ingest_partitions(
            con, landing_dir, table, weeks, max_reject_share=max_reject_share, options=options
        )
    from churn_assets.compute.ingestion import ingest_partitions_on_cluster

    return ingest_partitions_on_cluster(
        con,
        engine.client,
        landing_dir,
        table,
        weeks,
        home=engine.settings.home,
        shards=engine.settings.compute.shards,
        max_reject_share=max_reject_share,
        options=options,
    )


def materialize_features(
    engine: Engine, con: duckdb.DuckDBPyConnection, as_of_dates: Sequence[dt.date]
) -> MaterializeReport:
    """The feature snapshots at ``as_of_dates`` into the offline store (``materialize_offline``, or per
    customer shard on the cluster: the same rows)."""
    if engine.client is None:
        from churn_assets.feature_store.materialize import materialize_offline

        return materialize_offline(con, as_of_dates)
    from churn_assets.compute.features import materialize_offline_on_cluster

    compute = engine.settings.compute
    return materialize_offline_on_cluster(
        con,
        engine.client,
        as_of_dates,
        home=engine.settings.home,
        shards=compute.shards,
        threads=compute.threads_per_worker,
    )


def build_training_set(
    engine: Engine, con: duckdb.DuckDBPyConnection, timeline: Timeline, workdir: TrainingWorkdir
) -> dict[str, Any]:
    """Build, check (``check_training_set``, before anything is written) and store the training set in
    ``workdir``: one file (local) or one file per customer shard written by the workers (dask, see
    ``churn_assets.compute.training_set``); its metadata, the same for both engines."""
    if engine.client is None:
        from churn_assets.modeling.training_set import build_training_table, check_training_set

        frame, meta = build_training_table(con, timeline, engine.settings)
        check_training_set(meta)
        workdir.write_training_set(frame, meta)
        return meta
    from churn_assets.compute.training_set import build_training_set_on_cluster

    return build_training_set_on_cluster(con, engine.client, timeline, engine.settings, workdir)


__all__ = ["Engine", "build_training_set", "ingest_raw", "materialize_features", "open_engine"]
