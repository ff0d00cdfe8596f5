"""Training on the Dask engine: LightGBM data-parallel over customer shards, Optuna trials as cluster tasks.

* **Shards** (:class:`TrainingShards`): the training set as one Parquet file per customer shard —
  ``<root>/shard-<k>.parquet`` holding the rows of the customers with ``shard_of(customer_id) == k`` and
  the training set's columns (the layout the Dask engine's training-set stage writes; a local engine's
  single file is partitioned into it once, :func:`training_shards`). A worker reads its shard with the same
  reader as the local engine (:func:`~churn_assets.modeling.training_set.read_split`: float32 numeric
  features, string features as ``category`` with the training set's FIXED category lists, so every
  shard encodes a category with the same code).
* **LightGBM** (:func:`fit_lightgbm_dask`): ``lightgbm.dask.DaskLGBMClassifier`` with
  ``tree_learner="data"``: one LightGBM process per worker trains on the shards that worker holds and
  the workers exchange histograms over LightGBM's own sockets. The fitted model comes back as a plain
  ``LGBMClassifier`` (``to_local``), the same object the local engine produces, so calibration,
  evaluation, registration and serving do not know which engine fitted it.
* **Optuna** (:func:`run_trials_on_cluster`): the remaining trials of a study are divided among
  cluster tasks, one per worker, each running ``tuning.TrialJob.run`` against the study's RDB storage
  (SQLite file under the shared home, or PostgreSQL); the storage is what makes the trials one study.
  The tuning sample is scattered to the workers once.

:class:`DaskTrainer` bundles the two for the candidate step (``candidate_stage.run_candidates``);
:func:`distributed_trainer` yields one when ``compute.engine = dask`` and None for the local engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.dataset as pads

from churn_assets.compute.cluster import engine_label, scheduler_workers, shard_expr, worker_count
from churn_assets.compute.scoring import cluster_client
from churn_assets.modeling.training_set import SPLIT, read_split
from churn_assets.modeling.tuning import TrialJob
from churn_assets.settings import Settings

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

log = logging.getLogger(__name__)

SHARD_FILE = "shard-{shard:05d}.parquet"


@dataclass(frozen=True)
class TrainingShards:
    """A training set as one Parquet file per customer shard: ``root/shard-00000.parquet``, ... — the
    layout of the Dask engine's training-set stage (``<training_dir>/training_set.parquet/``)."""

    root: Path
    shards: int

    def path(self, shard: int) -> Path:
        return self.root / SHARD_FILE.format(shard=shard)

    def rows(self, split: str) -> dict[int, int]:
        """Rows of ``split`` per shard (Parquet statistics and a filtered count; no feature is read)."""
        out: dict[int, int] = {}
        for k in range(self.shards):
            path = self.path(k)
            if not path.exists():
                raise FileNotFoundError(f"training-set shard {k} of {self.shards} is missing: {path}")
            out[k] = pads.dataset(path, format="parquet").count_rows(filter=pads.field(SPLIT) == split)
        return out


def shard_training_set(training_set: Path, root: Path, shards: int) -> TrainingShards:
    """Partition the local engine's single-file training set into ``root/shard-<k>.parquet`` by
    :func:`~churn_assets.compute.cluster.shard_of` of ``customer_id``, keeping its row order (as-of, then
    customer) and columns. One streaming pass per shard: the driver never holds the whole set."""
    root.mkdir(parents=True, exist_ok=True)
    scan = pl.scan_parquet(training_set)
    for k in range(shards):
        scan.filter(shard_expr(shards) == k).sink_parquet(root / SHARD_FILE.format(shard=k))
    return TrainingShards(root, shards)


def training_shards(settings: Settings, training_set: Path, data_sha256: str) -> TrainingShards:
    """The training set's shards for the trainer. A sharded training set (a directory of
    ``shard-<k>.parquet``, written by the Dask engine's training-set stage) is used where it is; a
    single-file one (written by the local engine) is partitioned once into ``compute.shards`` files next
    to it (``<training_dir>/shards/<sha[:12]>-<shards>/``) and reused after."""
    if training_set.is_dir():
        files = sorted(training_set.glob("shard-*.parquet"))
        if not files:
            raise FileNotFoundError(f"the sharded training set {training_set} holds no shard-*.parquet file")
        shards = TrainingShards(training_set, len(files))
        unexpected = sorted(set(files) - {shards.path(k) for k in range(len(files))})
        if unexpected:
            raise FileNotFoundError(
                f"the sharded training set {training_set} misses shards: found {unexpected}"
            )
        return shards
    count = settings.compute.shards
    root = training_set.parent / "shards" / f"{data_sha256[:12]}-{count}"
    done = root / "_SUCCESS"
    if not done.exists():
        shard_training_set(training_set, root, count)
        done.write_text(data_sha256)
    return TrainingShards(root, count)


def _meta(features: Sequence[str], categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """An empty frame with the dtypes :func:`read_split` gives (the Dask collections' ``meta``)."""
    return pd.DataFrame(
        {
            f: pd.Categorical([], categories=list(categories[f]))
            if f in categories
            else np.empty(0, np.float32)
            for f in features
        }
    )


def dask_split(
    shards: TrainingShards,
    split: str,
    features: Sequence[str],
    categories: Mapping[str, Sequence[str]],
) -> tuple[dd.DataFrame, dd.Series, dict[int, int]]:
    """``(X, y, rows per shard)`` of one split as Dask collections with one partition per non-empty
    shard; each partition is read by a worker (:func:`read_split` on its shard's folder)."""
    import dask
    import dask.dataframe as dd

    rows = shards.rows(split)
    present = [k for k, n in rows.items() if n]
    if not present:
        raise ValueError(
            f"the {split} split has no rows in any of the {shards.shards} shards at {shards.root}"
        )
    cats = {k: list(v) for k, v in categories.items()}
    parts = [
        dask.delayed(read_split, nout=2, pure=True)(shards.path(k), split, list(features), cats)
        for k in present
    ]
    X = dd.from_delayed([p[0] for p in parts], meta=_meta(features, cats), verify_meta=False)
    y = dd.from_delayed([p[1] for p in parts], meta=pd.Series([], dtype=np.float64, name="churned"))
    return X, y, rows


def fit_lightgbm_dask(
    client: Client,
    shards: TrainingShards,
    params: Mapping[str, Any],
    features: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    *,
    seed: int = 42,
) -> tuple[lgb.LGBMClassifier, dict[int, int]]:
    """LightGBM fitted data-parallel on the train split's shards (see the module doc): the local
    ``LGBMClassifier`` and the train rows per shard. ``params``: ``LGBMClassifier`` keyword arguments;
    each worker's LightGBM uses that worker's threads (``compute.threads_per_worker``)."""
    from distributed import futures_of, wait

    X, y, rows = dask_split(shards, "train", features, categories)
    model = lgb.DaskLGBMClassifier(
        client=client,
        objective="binary",
        random_state=seed,
        verbose=-1,
        tree_learner="data",
        **dict(params),
    )
    with client.as_current():  # lightgbm.dask (and wait) use the default client
        X, y = client.persist([X, y])
        parts = futures_of([X, y])
        wait(parts)  # the shards are read (a lost worker's reads rerun elsewhere) before LightGBM starts
        failed = [f for f in parts if f.status == "error"]
        if failed:
            exc = failed[0].exception()
            raise RuntimeError(
                f"reading the training-set shards under {shards.root} failed on the cluster: {exc!r}"
            ) from exc
    fit_watching_workers(client, model, X, y)
    return model.to_local(), rows


class WorkerLostError(RuntimeError):
    """A worker of LightGBM's data-parallel ring was lost: the fit cannot go on without its shards."""


def _workers(client: Client) -> set[str]:
    return scheduler_workers(client)


async def _kill_this_worker() -> None:
    """Run on a worker's event loop (a coroutine: ``client.run(..., wait=False)`` takes no other kind):
    end its process at once (SIGKILL); its nanny starts a new one."""
    os.kill(os.getpid(), signal.SIGKILL)


def fit_watching_workers(
    client: Client,
    model: lgb.DaskLGBMClassifier,
    X: dd.DataFrame,
    y: dd.Series,
    *,
    poll_seconds: float = 0.5,
    restart_timeout_seconds: float = 60.0,
) -> None:
    """``model.fit(X, y)``, failing cleanly if a worker is lost meanwhile.

    LightGBM's workers form a ring over their own sockets, pinned to the workers that hold the data: when
    one dies, Dask cannot rerun its part elsewhere (the part is pinned to the dead worker's address) and
    the others wait for it inside LightGBM. So the fit runs in a thread while this one watches the
    scheduler's workers; on a loss it restarts the surviving workers of the fit (freeing them) and
    raises :class:`WorkerLostError`. Nothing has been written by then: the stage can simply be rerun."""
    before = _workers(client)
    error: list[BaseException] = []

    def fit() -> None:
        try:
            with client.as_current():  # lightgbm.dask waits on its parts with the default client
                model.fit(X, y)
        except BaseException as exc:  # handed to the calling thread
            error.append(exc)

    thread = threading.Thread(target=fit, name="lightgbm-dask-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_seconds)
        lost = before - _workers(client) if thread.is_alive() else set()
        if lost:
            survivors = sorted(before - lost)
            log.warning(
                "Dask worker(s) %s lost during the LightGBM fit; restarting %s", sorted(lost), survivors
            )
            if survivors:
                # A survivor is stuck inside LightGBM's collective and cannot close gracefully: a graceful
                # restart that times out makes the scheduler close its nanny for good (the cluster shrinks).
                # Killed, its nanny starts a fresh worker process, as for the worker that was lost.
                client.run(_kill_this_worker, workers=survivors, wait=False)
            thread.join(restart_timeout_seconds)
            raise WorkerLostError(
                f"Dask worker(s) {sorted(lost)} were lost during LightGBM's data-parallel fit; the surviving "
                f"workers {survivors} were restarted and nothing was written: rerun the stage"
            )
    if error:
        lost = before - _workers(client)
        if lost:  # the fit failed on the loss itself before the watcher saw it
            raise WorkerLostError(
                f"Dask worker(s) {sorted(lost)} were lost during LightGBM's data-parallel fit "
                f"({type(error[0]).__name__}: {error[0]}); nothing was written: rerun the stage"
            ) from error[0]
        raise error[0]


def run_trials_on_cluster(client: Client, job: TrialJob, n_trials: int) -> int:
    """Run ``n_trials`` trials of ``job``'s study as concurrent cluster tasks (one per worker, the trials
    divided as evenly as possible, each task with its own sampler seed); the number of tasks.

    Every task loads the study from the RDB storage, so the trials of all tasks are one study and the
    TPE sampler of each task sees the trials the others have finished."""
    if n_trials <= 0:
        return 0
    workers = max(worker_count(client), 1)
    tasks = min(workers, n_trials)
    shares = [n_trials // tasks + (1 if i < n_trials % tasks else 0) for i in range(tasks)]
    [remote] = client.scatter([job], broadcast=True)
    futures = [
        client.submit(
            _run_trials,
            remote,
            share,
            i,
            key=f"optuna-trials-{job.study_name}-{i}-{uuid.uuid4().hex[:8]}",
            pure=False,
        )
        for i, share in enumerate(shares)
    ]
    client.gather(futures)
    return tasks


def _run_trials(job: TrialJob, n_trials: int, task: int) -> int:
    job.run(n_trials, seed_offset=task)
    return n_trials


@dataclass
class DaskTrainer:
    """The candidate step's distributed trainer: a cluster client and the training set's shards."""

    client: Client
    shards: TrainingShards
    label: str

    @property
    def workers(self) -> int:
        return worker_count(self.client)

    def fit_lightgbm(
        self,
        params: Mapping[str, Any],
        features: Sequence[str],
        categories: Mapping[str, Sequence[str]],
        seed: int,
    ) -> tuple[lgb.LGBMClassifier, dict[int, int]]:
        return fit_lightgbm_dask(self.client, self.shards, params, features, categories, seed=seed)

    def run_trials(self, job: TrialJob, n_trials: int) -> int:
        return run_trials_on_cluster(self.client, job, n_trials)


@contextlib.contextmanager
def distributed_trainer(
    settings: Settings, training_set: Path, data_sha256: str, client: Client | None = None
) -> Iterator[DaskTrainer | None]:
    """A :class:`DaskTrainer` when ``compute.engine = dask``, None for the local engine. ``client``: a
    connected client to use (e.g. the run's engine resource); without one, a client of the configured
    cluster is opened for the block, every worker's access to the storage root checked first."""
    compute = settings.compute
    if compute.engine != "dask":
        yield None
        return
    shards = training_shards(settings, training_set, data_sha256)
    with cluster_client(settings, client) as connected:
        yield DaskTrainer(connected, shards, engine_label(compute))


__all__ = [
    "DaskTrainer",
    "TrainingShards",
    "WorkerLostError",
    "dask_split",
    "distributed_trainer",
    "fit_lightgbm_dask",
    "fit_watching_workers",
    "run_trials_on_cluster",
    "shard_training_set",
    "training_shards",
]
