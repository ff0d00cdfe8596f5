"""The Dask cluster behind ``compute.engine = dask``: a real scheduler and worker processes on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from churn_assets.compute.cluster import (
    ComputeConfigError,
    check_storage,
    dask_client,
    scheduler_workers,
    shard_expr,
    shard_of,
    worker_count,
)
from churn_assets.settings import ComputeSettings, Settings

pytestmark = pytest.mark.distributed


def test_workers_are_asked_of_the_scheduler_not_of_the_clients_cache(dask_client_2w):
    client = dask_client_2w
    addresses = set(client.scheduler_info()["workers"])
    assert len(addresses) == 2
    # The client's periodic refresh (every few seconds, on its own loop) stores an identity without
    # per-worker entries: read then, the cache says the cluster has no workers. The fit's watcher took that
    # for two lost workers; it asks the scheduler.
    client.sync(client._update_scheduler_info)
    assert client._scheduler_identity["workers"] == {}
    assert scheduler_workers(client) == addresses and worker_count(client) == 2


def test_local_cluster_has_the_configured_worker_processes_and_memory_limit(dask_client_2w, tmp_path: Path):
    client = dask_client_2w
    workers = client.scheduler_info()["workers"]
    assert worker_count(client) == 2
    assert {w["memory_limit"] for w in workers.values()} == {1024**3}
    # separate processes, none of them this one
    pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(pids) == 2 and __import__("os").getpid() not in pids
    assert check_storage(client, tmp_path) == 2


def test_a_worker_without_the_storage_root_is_refused_naming_the_root(dask_client_2w, tmp_path: Path):
    missing = tmp_path / "not-mounted"
    with pytest.raises(
        ComputeConfigError, match=r"2 of 2 Dask workers cannot use the storage root .*not-mounted"
    ):
        check_storage(dask_client_2w, missing)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_fails_fast_naming_the_setting():
    compute = ComputeSettings(
        engine="dask", scheduler=f"tcp://127.0.0.1:{_free_port()}", connect_timeout_seconds=1
    )
    with (
        pytest.raises(ComputeConfigError, match=r"compute.scheduler: no Dask scheduler answered"),
        dask_client(compute),
    ):
        pass


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CHURNOPS_COMPUTE__SHARDS": "0"}, "compute.shards"),
        ({"CHURNOPS_COMPUTE__SCHEDULER": "my-cluster"}, "compute.scheduler"),
        ({"CHURNOPS_COMPUTE__SCHEDULER": "local:0"}, "compute.scheduler"),
        ({"CHURNOPS_COMPUTE__ENGINE": "spark"}, "compute.engine"),
    ],
)
def test_bad_compute_settings_name_the_field(monkeypatch, env: dict[str, str], field: str):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    locs = {".".join(map(str, e["loc"])) for e in info.value.errors()}
    assert field in locs


def test_shards_are_stable_balanced_and_equal_in_numpy_and_polars():
    ids = np.arange(1, 200_001, dtype=np.int64)
    shards = shard_of(ids, 8)
    # the same customer always lands on the same shard: pinned so a change of the hash is noticed
    assert shard_of(np.array([1, 2, 3, 500_000]), 8).tolist() == [1, 2, 4, 7]
    counts = np.bincount(shards, minlength=8)
    assert counts.min() > 0.95 * len(ids) / 8 and counts.max() < 1.05 * len(ids) / 8
    polars_shards = pl.DataFrame({"customer_id": ids}).select(shard_expr(8)).to_series().to_numpy()
    np.testing.assert_array_equal(polars_shards, shards)
    # one shard is the whole population
    assert set(shard_of(ids, 1).tolist()) == {0}
    with pytest.raises(ComputeConfigError, match=r"compute\.shards must be at least 1"):
        shard_of(ids, 0)


def test_the_demo_shares_one_local_cluster_with_every_run_then_stops_it(tmp_path: Path):
    """``churnops demo`` on ``local:N`` starts one cluster and hands its address to every run."""
    from churn_assets.orchestration.demo import shared_cluster

    settings = Settings(
        home=tmp_path,
        compute=ComputeSettings(engine="dask", scheduler="local:2", worker_memory_limit="512MiB"),
    )
    lines: list[str] = []
    with shared_cluster(settings, lines.append) as shared:
        address = shared.compute.scheduler
        assert address.startswith("tcp://127.0.0.1:") and shared.home == settings.home
        # two runs connect to the same workers (a run's own dask_client on the address starts nothing)
        with dask_client(shared.compute, storage_root=tmp_path) as first:
            pids = set(first.run(lambda: __import__("os").getpid()).values())
        with dask_client(shared.compute) as second:
            assert set(second.run(lambda: __import__("os").getpid()).values()) == pids
            limits = {w["memory_limit"] for w in second.scheduler_info()["workers"].values()}
        assert len(pids) == 2 and limits == {512 * 1024**2}
    assert lines and address in lines[0]
    with socket.socket() as s:  # the scheduler's port is closed with the demo
        assert s.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) != 0
    local = Settings(home=tmp_path)
    with shared_cluster(local, lines.append) as unchanged:
        assert unchanged is local  # the local engine: nothing started
