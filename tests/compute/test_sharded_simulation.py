"""The sharded simulator: deterministic for a seed and a shard count, the same files whether the shards
run in this process or on a Dask cluster, identifiers unique across shards."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from churn_assets.compute.engine import Engine
from churn_assets.settings import Settings, SimulationSettings
from churn_assets.simulation.sharded import ShardedWorld, shard_settings
from tests.simulation_helpers import assert_same_landing, landing_files

pytestmark = pytest.mark.distributed

SIM = SimulationSettings(n_customers=450, history_months=4)
SHARDS = 3


def _generate(home: Path, engine: Engine, weeks: int) -> tuple[ShardedWorld, list[str]]:
    world, history = ShardedWorld.simulate_history(
        SIM, SHARDS, home / "world", home / "landing", engine.map_tasks
    )
    world, production = world.advance(weeks, home / "landing", engine.map_tasks)
    return ShardedWorld.load(home / "world", SHARDS), history + production


def test_shards_on_the_cluster_give_the_files_of_shards_run_here(tmp_path: Path, dask_client_2w):
    settings = Settings(home=tmp_path)
    here, here_keys = _generate(tmp_path / "here", Engine(settings, None), weeks=2)
    there, there_keys = _generate(tmp_path / "there", Engine(settings, dask_client_2w), weeks=2)
    assert here_keys == there_keys and len(here_keys) == here.timeline.history_weeks + 2
    assert here.week == there.week == len(here_keys)
    assert_same_landing(tmp_path / "here" / "landing", tmp_path / "there" / "landing")
    # only the current state of each shard is kept
    assert sorted(p.name for p in (tmp_path / "here" / "world").glob("*.pkl")) == [
        f"shard-{k:05d}.week-{here.week:05d}.pkl" for k in range(SHARDS)
    ]

    landing = tmp_path / "here" / "landing"
    accounts = pl.concat(
        [pl.read_parquet(p) for (t, _), p in landing_files(landing).items() if t == "accounts"]
    )
    assert accounts["customer_id"].is_unique().all()
    assert accounts.height >= SIM.n_customers  # the initial base and the signups since
    for table, key in (("billing", "invoice_id"), ("support_tickets", "ticket_id")):
        ids = pl.concat([pl.read_parquet(p) for (t, _), p in landing_files(landing).items() if t == table])
        assert ids[key].is_unique().all() and ids.height > 0
    # every shard holds its share of the initial base: ids k+1, k+1+S, ... come from shard k
    base = accounts.filter(pl.col("week_start") == accounts["week_start"].min())
    assert base.height == SIM.n_customers
    shares = base.group_by((pl.col("customer_id") - 1) % SHARDS).len().sort("customer_id")["len"].to_list()
    assert shares == [shard_settings(SIM, k, SHARDS).n_customers for k in range(SHARDS)] == [150, 150, 150]


def test_the_shard_count_and_seed_define_the_world(tmp_path: Path):
    seeds = {shard_settings(SIM, k, n).seed for n in (2, 3) for k in range(n)}
    assert len(seeds) == 5  # every (count, shard) its own seed
    world, keys = ShardedWorld.simulate_history(SIM, SHARDS, tmp_path / "world", tmp_path / "landing")
    assert world.history_done and world.week == len(keys) == world.timeline.history_weeks
    with pytest.raises(ValueError, match="generated with 3 shards, not 2"):
        ShardedWorld.load(tmp_path / "world", 2)
    with pytest.raises(FileExistsError):
        ShardedWorld.simulate_history(SIM, SHARDS, tmp_path / "world", tmp_path / "landing")
    with pytest.raises(ValueError, match="smaller than the shard count"):
        shard_settings(SimulationSettings(n_customers=2), 2, 3)


def test_churnops_simulate_shards_on_the_cluster_then_continues_the_sharded_world(
    tmp_path: Path, dask_client_2w
):
    from tests.code.test_cli import churnops

    env = {
        "CHURNOPS_SIMULATION__N_CUSTOMERS": str(SIM.n_customers),
        "CHURNOPS_SIMULATION__HISTORY_MONTHS": str(SIM.history_months),
        "CHURNOPS_COMPUTE__ENGINE": "dask",
        "CHURNOPS_COMPUTE__SCHEDULER": dask_client_2w.scheduler.address,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    first = churnops("simulate", "--shards", SHARDS, home=tmp_path, **env)
    assert first.returncode == 0, first.stderr
    assert f"{SHARDS} shards, dask tcp://" in first.stderr
    world = ShardedWorld.load(tmp_path / "world" / "shards", SHARDS)
    assert world.history_done and not (tmp_path / "world" / "state.pkl").exists()
    more = churnops("simulate", "--weeks", 1, home=tmp_path, **env)
    assert more.returncode == 0, more.stderr
    assert "landed 1 week(s)" in more.stdout
    assert ShardedWorld.load(tmp_path / "world" / "shards").week == world.week + 1
    landed = landing_files(tmp_path / "landing")
    assert len(landed) == 6 * (world.week + 1)  # six tables a week
