"""A worker process killed in the middle of a sharded stage: the scheduler reruns its tasks and the stage
completes with the local engine's rows; or, with no retry allowed, the stage fails and the raw tables, the
offline store and the published training set are unchanged."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import KilledWorker
from distributed.diagnostics.plugin import WorkerPlugin

from churn_assets.compute.cluster import dask_client
from churn_assets.compute.features import materialize_offline_on_cluster
from churn_assets.compute.ingestion import ingest_partitions_on_cluster
from churn_assets.compute.training_set import build_training_set_on_cluster
from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.feature_store.materialize import materialize_offline
from churn_assets.modeling.training_set import build_training_table
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import ComputeSettings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from tests.cluster_helpers import copy_world, snapshot_dates, stored_features

pytestmark = pytest.mark.distributed


class KillOnTask(WorkerPlugin):
    """Kills its worker process (SIGKILL) when a task whose key starts with ``prefix`` starts executing:
    once across restarts when ``marker`` is given (the file records the kill), else every time."""

    def __init__(self, prefix: str, marker: str | None) -> None:
        self.prefix, self.marker = prefix, marker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        if self.marker is not None:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)


COMPUTE = ComputeSettings(engine="dask", scheduler="local:2", worker_memory_limit="1GiB")


def _digest(path: Path) -> str:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()


def test_killed_workers_tasks_are_rerun_and_the_stages_complete(raw_world: Path, tmp_path: Path):
    settings = copy_world(raw_world, tmp_path / "home")
    timeline = Timeline.from_settings(settings.simulation)
    local = copy_world(raw_world, tmp_path / "local")
    with Warehouse(local.warehouse_path).connect() as con:
        materialize_offline(con, snapshot_dates(local, con))
        expected = {g.name: stored_features(con, g.name) for g in FEATURE_GROUPS}
        _, expected_meta = build_training_table(con, timeline, local)
    marks = {stage: tmp_path / f"killed-{stage}" for stage in ("shard_snapshots", "training_shard")}
    with dask_client(COMPUTE, storage_root=settings.home) as client:
        for prefix, marker in marks.items():
            client.register_plugin(KillOnTask(prefix, str(marker)), name=f"kill-{prefix}")
        with Warehouse.of(settings).connect() as con:
            materialize_offline_on_cluster(
                con, client, snapshot_dates(settings, con), home=settings.home, shards=settings.compute.shards
            )
            for group in FEATURE_GROUPS:
                assert stored_features(con, group.name).equals(expected[group.name]), group.name
            meta = build_training_set_on_cluster(
                con, client, timeline, settings, TrainingWorkdir.of(settings)
            )
    assert all(m.exists() for m in marks.values())  # a worker really died in each stage
    assert meta == expected_meta


def test_a_stage_that_loses_its_workers_fails_and_changes_nothing(raw_world: Path, tmp_path: Path):
    settings = copy_world(raw_world, tmp_path / "home")
    timeline = Timeline.from_settings(settings.simulation)
    workdir = TrainingWorkdir.of(settings)
    with Warehouse.of(settings).connect() as con:
        dates = snapshot_dates(settings, con)
        materialize_offline(con, dates[:-1])  # the newest snapshot is what the failing stage would add
        before = {g.name: stored_features(con, g.name) for g in FEATURE_GROUPS}
        frame, meta = build_training_table(con, timeline, settings)
    workdir.write_training_set(frame, meta)
    published, published_meta = _digest(workdir.training_set), workdir.training_set_meta.read_text()

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        dask_client(COMPUTE, storage_root=settings.home) as client,
        Warehouse.of(settings).connect() as con,
    ):
        client.register_plugin(KillOnTask("shard_snapshots", None), name="kill-features")
        client.register_plugin(KillOnTask("training_shard", None), name="kill-training")
        client.register_plugin(KillOnTask("validate_shard", None), name="kill-ingestion")
        landing = raw_world / "landing"
        weeks = sorted(p.stem for p in (landing / "usage").glob("*.parquet"))
        usage = con.sql("SELECT * FROM raw.usage ORDER BY ALL").pl()
        with pytest.raises(KilledWorker):
            ingest_partitions_on_cluster(
                con, client, landing, "usage", weeks, home=settings.home, shards=settings.compute.shards
            )
        assert con.sql("SELECT * FROM raw.usage ORDER BY ALL").pl().equals(usage)
        with pytest.raises(KilledWorker):
            materialize_offline_on_cluster(
                con, client, dates, home=settings.home, shards=settings.compute.shards
            )
        for group in FEATURE_GROUPS:
            assert stored_features(con, group.name).equals(before[group.name]), group.name
        with pytest.raises(KilledWorker):
            build_training_set_on_cluster(con, client, timeline, settings, workdir)
    assert _digest(workdir.training_set) == published
    assert workdir.training_set_meta.read_text() == published_meta
    assert not list((settings.home / "cluster").iterdir())  # exchange folders removed
    assert [p.name for p in workdir.root.iterdir() if p.name.startswith(".")] == []  # no staging left
