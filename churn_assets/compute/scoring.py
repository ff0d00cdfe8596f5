"""Weekly batch scoring on the Dask engine: every active customer scored on the worker that holds its shard.

The snapshot's feature rows are split by customer shard (:func:`~churn_assets.compute.cluster.shard_of`)
into Parquet files under a staging folder of the storage root (``<home>/compute/staging/``, which every
worker reaches — :func:`~churn_assets.compute.cluster.check_storage`); one cluster task per shard reads its
file and runs the local engine's own :func:`~churn_assets.automation.production.score_snapshot` on it —
the same routing, the same ``ScoringModel`` (loaded once here and broadcast to the workers), the same
prediction-log rows. The shard frames are concatenated in the local engine's row order (variant, then
customer), so both engines give identical scores, labels and feature hashes for the same model (only
``request_id`` and ``latency_ms`` differ, as between two local runs).

Nothing is written while the shards are scored: the caller writes the prediction log from the returned
frame only once every shard has been scored. A worker lost mid-stage makes the scheduler rerun its tasks
on another worker (a shard task's input is a file, not data held in the lost worker's memory); if the
stage cannot finish, it raises and the prediction log keeps what it had.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import pickle
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from churn_assets.automation.production import BatchScores, ScoringLoader, score_snapshot
from churn_assets.compute.cluster import dask_client, engine_label, shard_expr, worker_count
from churn_assets.feature_store.definitions import ENTITY
from churn_assets.settings import Settings

if TYPE_CHECKING:
    from distributed import Client

VARIANT_ORDER = {"champion": 0, "canary": 1, "shadow": 2}


@contextlib.contextmanager
def cluster_client(settings: Settings, client: Client | None = None) -> Iterator[Client]:
    """``client`` when given (a client the caller keeps open, e.g. the run's engine resource), else a client
    of the configured cluster for the block, every worker's access to the storage root checked first."""
    if client is not None:
        yield client
        return
    with dask_client(settings.compute, storage_root=settings.home) as connected:
        yield connected


def stage_shards(frame: pl.DataFrame, folder: Path, shards: int) -> dict[int, tuple[Path, int]]:
    """``frame`` split by the customer shard of ``customer_id`` into ``folder/shard=<k>.parquet`` (the
    non-empty shards only, rows in ``frame``'s order); ``shard -> (file, rows)``."""
    folder.mkdir(parents=True, exist_ok=True)
    keyed = frame.with_columns(shard_expr(shards).alias("__shard"))
    out: dict[int, tuple[Path, int]] = {}
    for key, part in keyed.partition_by("__shard", as_dict=True, maintain_order=True).items():
        shard = int(key[0])  # type: ignore[arg-type]
        path = folder / f"shard={shard}.parquet"
        part.drop("__shard").write_parquet(path)
        out[shard] = (path, part.height)
    return dict(sorted(out.items()))


def staging_folder(settings: Settings, stage: str) -> Path:
    """A fresh folder for one stage's shard files under ``<home>/compute/staging/`` (every worker's path)."""
    return settings.home / "compute" / "staging" / f"{stage}-{uuid.uuid4().hex[:12]}"


@functools.lru_cache(maxsize=4)
def _unpickled_models(payload: bytes) -> Mapping[str, Any]:
    """The week's models on a worker, unpickled once per worker process and payload.

    The models travel as standard pickle bytes: scattered as objects, Dask's serialization gave the
    workers a ``RankedIsotonic`` calibrator without the interpolation scikit-learn rebuilds on unpickling
    (``IsotonicRegression.f_``), and every calibrated version failed to score."""
    models: Mapping[str, Any] = pickle.loads(payload)
    return models


def _score_shard(
    path: str,
    as_of: dt.date,
    phase: str,
    stable_version: str,
    candidate_version: str | None,
    models_pickle: bytes,
    route: Callable[[int], str],
) -> pl.DataFrame:
    """Run on a worker: the local engine's scoring of one shard's feature rows."""
    models = _unpickled_models(models_pickle)
    features = pl.read_parquet(path)
    result = score_snapshot(
        features,
        as_of,
        phase=phase,
        stable_version=stable_version,
        candidate_version=candidate_version,
        load=lambda version: models[version],
        route=route,
    )
    return result.frame


def in_local_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Prediction-log rows in the order of the local engine: champion, canary, shadow; customers ascending
    within a variant (the snapshot's order)."""
    rank = pl.col("variant").replace_strict(VARIANT_ORDER, return_dtype=pl.Int8)
    return frame.sort(rank, pl.col(ENTITY), maintain_order=True)


def score_snapshot_sharded(
    client: Client,
    features: pl.DataFrame,
    as_of: dt.date,
    *,
    phase: str,
    stable_version: str,
    candidate_version: str | None,
    load: ScoringLoader,
    route: Callable[[int], str],
    shards: int,
    staging: Path,
) -> tuple[BatchScores, dict[int, int]]:
    """:func:`~churn_assets.automation.production.score_snapshot` of ``features`` with one cluster task per
    customer shard (see the module doc); the scores and the customers scored per shard. ``staging`` is
    removed afterwards, whether the stage succeeds or not."""
    started = time.perf_counter()
    if features.is_empty():
        return score_snapshot(
            features,
            as_of,
            phase=phase,
            stable_version=stable_version,
            candidate_version=candidate_version,
            load=load,
            route=route,
        ), {}
    active = candidate_version is not None and phase not in ("none", "full")
    versions = [stable_version, *([str(candidate_version)] if active else [])]
    models = {version: load(version) for version in versions}
    try:
        files = stage_shards(features, staging, shards)
        [remote_models] = client.scatter(
            [pickle.dumps(models, protocol=pickle.HIGHEST_PROTOCOL)], broadcast=True
        )
        futures = [
            client.submit(
                _score_shard,
                str(path),
                as_of,
                phase,
                stable_version,
                candidate_version,
                remote_models,
                route,
                key=f"score-shard-{as_of.isoformat()}-{shard}-{uuid.uuid4().hex[:8]}",
            )
            for shard, (path, _rows) in files.items()
        ]
        frames: list[pl.DataFrame] = client.gather(futures)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    per_shard = {shard: rows for shard, (_path, rows) in files.items()}
    frame = in_local_order(pl.concat([f for f in frames if f.height], how="vertical"))
    return (
        BatchScores(as_of, frame, stable_version, candidate_version, phase, time.perf_counter() - started),
        per_shard,
    )


def score_week(
    settings: Settings,
    features: pl.DataFrame,
    as_of: dt.date,
    *,
    phase: str,
    stable_version: str,
    candidate_version: str | None,
    load: ScoringLoader,
    route: Callable[[int], str],
    client: Client | None = None,
) -> tuple[BatchScores, dict[str, Any]]:
    """The week's batch scores on the configured engine (``compute.engine``) and what ran them (engine,
    workers, customers per shard) for the run's metadata. ``client``: see :func:`cluster_client`."""
    compute = settings.compute
    if compute.engine == "local":
        result = score_snapshot(
            features,
            as_of,
            phase=phase,
            stable_version=stable_version,
            candidate_version=candidate_version,
            load=load,
            route=route,
        )
        return result, {"engine": "local"}
    with cluster_client(settings, client) as connected:
        result, per_shard = score_snapshot_sharded(
            connected,
            features,
            as_of,
            phase=phase,
            stable_version=stable_version,
            candidate_version=candidate_version,
            load=load,
            route=route,
            shards=compute.shards,
            staging=staging_folder(settings, f"batch-scores-{as_of.isoformat()}"),
        )
        workers = worker_count(connected)
    return result, {"engine": engine_label(compute), "workers": workers, "customers_by_shard": per_shard}


__all__ = [
    "cluster_client",
    "in_local_order",
    "score_snapshot_sharded",
    "score_week",
    "stage_shards",
    "staging_folder",
]
