"""The simulated world: determinism, persistence, contracts, calibration and point-in-time features."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP, FEATURE_GROUPS, all_features
from churn_assets.feature_store.transforms import compute_snapshots
from churn_assets.settings import Settings
from churn_assets.simulation import World, advance, simulate_history
from churn_assets.simulation.calibration import LABEL, labelled_frame
from data_contracts.raw_tables import RAW_CONTRACTS, RAW_TABLES, polars_schema
from tests.simulation_helpers import (
    assert_same_landing,
    duckdb_with_landing,
    landing_files,
    read_partition,
    small_settings,
)

N_CUSTOMERS = 8_000
PRODUCTION_WEEKS = 3


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """History + 3 production weeks of a small world; returns (landing dir, saved state after history)."""
    root = tmp_path_factory.mktemp("world")
    landing, state = root / "landing", root / "state.pkl"
    world = World.create(small_settings(N_CUSTOMERS))
    world.simulate_history(landing)
    world.save(state)
    world.advance(PRODUCTION_WEEKS, landing)
    return landing, state


def test_calendar_and_partitions(world_dir: tuple[Path, Path]) -> None:
    landing, state = world_dir
    world = World.load(state)
    tl = world.timeline
    assert world.current_date == tl.history_end == dt.date(2025, 9, 8)
    files = landing_files(landing)
    keys = sorted({k for _, k in files})
    expected = tl.history_week_keys() + [
        (tl.history_end + dt.timedelta(days=7 * i)).isoformat() for i in range(PRODUCTION_WEEKS)
    ]
    assert keys == expected
    assert len(files) == len(RAW_TABLES) * len(expected)  # one file per table per week, even if empty


def test_same_seed_same_world_and_save_load_advance(world_dir: tuple[Path, Path], tmp_path: Path) -> None:
    landing, state = world_dir
    # Same seed + settings => identical history files.
    other = World.create(small_settings(N_CUSTOMERS))
    other.simulate_history(tmp_path / "again")
    assert_same_landing(landing, tmp_path / "again", keys=other.timeline.history_week_keys())
    # history, save, load, advance(k) == history + advance(k) in one process.
    resumed = World.load(state)
    keys = resumed.advance(PRODUCTION_WEEKS, tmp_path / "resumed")
    assert resumed.current_date == resumed.timeline.history_end + dt.timedelta(days=7 * PRODUCTION_WEEKS)
    assert_same_landing(landing, tmp_path / "resumed", keys=keys)
    # A different seed gives a different world.
    changed = World.create(small_settings(N_CUSTOMERS, seed=7))
    key, tables = changed.step()
    assert not pl.DataFrame(tables["usage"]).equals(read_partition(landing, "usage", key))


def test_landing_files_satisfy_contracts(world_dir: tuple[Path, Path]) -> None:
    landing, state = world_dir
    tl = World.load(state).timeline
    weeks = [tl.week_start(0).isoformat(), tl.week_start(40).isoformat(), tl.history_week_keys()[-1]]
    weeks.append(tl.history_end.isoformat())
    for table in RAW_TABLES:
        contract, _ = RAW_CONTRACTS[table]
        for key in weeks:
            df = read_partition(landing, table, key)
            assert dict(df.schema) == polars_schema(table), (table, key)
            contract.validate(df, lazy=True)
    # Keys are unique across all partitions.
    for table, (_, key_cols) in RAW_CONTRACTS.items():
        df = pl.read_parquet(landing / table / "*.parquet", columns=list(key_cols))
        assert df.height > 0, table
        assert df.is_duplicated().sum() == 0, table


def test_landing_row_semantics(world_dir: tuple[Path, Path]) -> None:
    landing, state = world_dir
    tl = World.load(state).timeline
    accounts = pl.read_parquet(landing / "accounts" / "*.parquet")
    first = accounts.filter(pl.col("week_start") == tl.start_date)
    assert first.height == N_CUSTOMERS
    assert first["signup_date"].min() < tl.start_date - dt.timedelta(days=5 * 365)
    later = accounts.filter(pl.col("week_start") > tl.start_date)
    assert later.height > 0
    assert (later["signup_date"] >= later["week_start"]).all()
    churn = pl.read_parquet(landing / "churn_events" / "*.parquet")
    delay = (churn["week_start"] - churn["cancellation_date"]).dt.total_days()
    assert delay.min() >= 1 and delay.max() <= 7  # reported in the week after the cancellation week
    assert churn.join(accounts, on="customer_id", how="anti").height == 0
    tickets = pl.read_parquet(landing / "support_tickets" / "*.parquet")
    assert tickets["resolution_hours"].null_count() > 0
    assert (
        tickets.filter(pl.col("resolution_hours").is_null())["satisfaction"].null_count()
        == tickets.filter(pl.col("resolution_hours").is_null()).height
    )


def test_churn_rate_at_monthly_snapshots(world_dir: tuple[Path, Path]) -> None:
    landing, state = world_dir
    tl = World.load(state).timeline
    con = duckdb_with_landing(landing)
    frame = labelled_frame(con, list(tl.monthly_snapshots))
    rates = frame.groupby(EVENT_TIMESTAMP)[LABEL].mean()
    assert len(rates) == 18
    assert 0.07 <= rates.mean() <= 0.09, rates
    assert rates.between(0.06, 0.10).all(), rates


def test_transform_output_matches_declarations(world_dir: tuple[Path, Path]) -> None:
    landing, state = world_dir
    tl = World.load(state).timeline
    dates = [tl.monthly_snapshots[0], tl.monthly_snapshots[-1], tl.history_end]
    snaps = compute_snapshots(duckdb_with_landing(landing), dates)
    assert list(snaps) == [g.name for g in FEATURE_GROUPS]
    arrow_type = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    n_rows = {t.num_rows for t in snaps.values()}
    assert len(n_rows) == 1 and n_rows.pop() > 2 * N_CUSTOMERS
    n_features = 0
    for group in FEATURE_GROUPS:
        table = snaps[group.name]
        assert table.schema.names == [ENTITY, EVENT_TIMESTAMP, *group.feature_names]
        assert table.schema.field(ENTITY).type == pa.int64()
        assert pa.types.is_timestamp(table.schema.field(EVENT_TIMESTAMP).type)
        for feature in group.features:
            column = table.column(feature.name)
            assert column.type == arrow_type[feature.dtype], feature.name
            assert column.null_count == 0, feature.name
            if feature.dtype == "float64":
                assert np.isfinite(column.to_numpy()).all(), feature.name
        n_features += len(group.features)
    assert n_features == len(all_features()) == 45
    stamps = set(snaps[FEATURE_GROUPS[0].name].column(EVENT_TIMESTAMP).to_pylist())
    assert stamps == {dt.datetime.combine(d, dt.time()) for d in dates}


def test_snapshots_are_point_in_time(world_dir: tuple[Path, Path]) -> None:
    """A snapshot as of T is the same whether rows landing after T exist or not."""
    landing, state = world_dir
    tl = World.load(state).timeline
    as_of = tl.monthly_snapshots[6]
    full = compute_snapshots(duckdb_with_landing(landing), [as_of])
    cut = compute_snapshots(duckdb_with_landing(landing, landed_by=as_of), [as_of])
    for group in FEATURE_GROUPS:
        assert full[group.name].equals(cut[group.name]), group.name
    # And rows landed in the last week before T do matter (the cut is not vacuous).
    earlier = compute_snapshots(duckdb_with_landing(landing, landed_by=as_of - dt.timedelta(days=7)), [as_of])
    assert not earlier["customer_usage"].equals(full["customer_usage"])


def test_settings_entry_points(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, simulation=small_settings(1_000))
    keys = simulate_history(settings)
    assert len(keys) == 101 and settings.world_state_path.exists()
    with pytest.raises(FileExistsError):
        simulate_history(settings)
    assert advance(settings, 2) == ["2025-09-08", "2025-09-15"]
    assert World.load(settings.world_state_path).current_date == dt.date(2025, 9, 22)
    assert simulate_history(settings, overwrite=True) == keys
    assert not (settings.landing_dir / "usage" / "2025-09-08.parquet").exists()
    assert math.isclose(World.load(settings.world_state_path).week, 101)


def test_retention_offers_lower_the_churn_of_the_customers_who_got_one(world_dir: tuple[Path, Path]) -> None:
    """Same state, same random draws: with offers to half the active base (uplift 0.5), those customers
    churn less (a subset of the churners without offers), the others exactly as before."""
    _, state = world_dir
    base, offered = World.load(state), World.load(state)
    for world in (base, offered):
        world.settings = world.settings.model_copy(update={"retention_offer_uplift": 0.5})
    active = np.flatnonzero(base.customers.active)
    half = active[::2] + 1  # customer ids
    assert offered.send_offers(half.tolist()) == half.shape[0]
    base.step()
    offered.step()
    churned_base = set(np.flatnonzero(~base.customers.active[active]).tolist())
    churned_offered = set(np.flatnonzero(~offered.customers.active[active]).tolist())
    got_offer = set(range(0, active.shape[0], 2))
    assert churned_offered < churned_base  # fewer churners, no new ones (same uniform draws)
    assert churned_offered - got_offer == churned_base - got_offer  # the rest churn exactly as before
    assert len(churned_offered & got_offer) < len(churned_base & got_offer)
    assert offered.offers and min(offered.offers.values()) >= offered.week - 1
