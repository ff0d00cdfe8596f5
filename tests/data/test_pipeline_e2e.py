"""The raw -> contract -> feature -> online graph, materialized in process by Dagster."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from churn_assets.feature_store.definitions import FEATURE_GROUPS, all_features
from churn_assets.feature_store.offline import OfflineStore
from churn_assets.feature_store.online import SQLiteOnlineStore
from churn_assets.ingestion.landing import landing_path
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from data_contracts.raw_tables import RAW_TABLES
from tests.pipeline_helpers import run, simulate, small_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    settings = small_settings(tmp_path_factory.mktemp("world"))
    weeks = simulate(settings)
    instance = dg.DagsterInstance.ephemeral()
    result = run(settings, weeks, instance)
    return settings, weeks, instance, result


def test_job_materializes_every_raw_and_feature_asset(world) -> None:
    _, weeks, instance, result = world
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {f"raw/{t}" for t in RAW_TABLES} <= materialized
    assert {f"features/{g.name}" for g in FEATURE_GROUPS} <= materialized
    assert "features/online_store" in materialized
    raw_parts = instance.get_materialized_partitions(dg.AssetKey(["raw", "usage"]))
    assert raw_parts == set(weeks)


def test_every_contract_check_passed(world) -> None:
    _, _, _, result = world
    evaluations = result.get_asset_check_evaluations()
    checks = [c for c in evaluations if c.check_name == "contract"]
    assert sorted(c.asset_key.path[-1] for c in checks) == sorted(RAW_TABLES)
    assert all(c.passed for c in checks), [c.description for c in checks if not c.passed]
    # the only other check of the main job: the WARN feature-deprecation check on the online store
    assert {c.check_name for c in evaluations} - {"contract"} == {"features_not_deprecated"}


def test_offline_store_holds_every_snapshot_with_all_features(world) -> None:
    settings, _, _, _ = world
    timeline = Timeline.from_settings(settings.simulation)
    with Warehouse.of(settings).connect() as con:
        store = OfflineStore(con)
        times = {t.date() for t in store.snapshot_times("customer_usage")}
        assert times == set(timeline.snapshot_dates(timeline.history_end))
        entity = pl.DataFrame(
            {
                "customer_id": [1, 2, 3],
                "event_timestamp": [dt.datetime.combine(timeline.history_end, dt.time())] * 3,
            }
        )
        frame = store.get_historical_features(entity)
    assert frame.height == 3
    assert set(f.name for f in all_features()) <= set(frame.columns)


def test_online_store_serves_the_newest_snapshot(world) -> None:
    settings, _, _, _ = world
    with Warehouse.of(settings).connect(read_only=True) as con:
        active = con.sql(
            "SELECT customer_id FROM features.customer_account WHERE event_timestamp = "
            "(SELECT max(event_timestamp) FROM features.customer_account) ORDER BY customer_id LIMIT 5"
        ).fetchall()
    store = SQLiteOnlineStore(settings.online_sqlite_path)
    try:
        now = dt.datetime.combine(Timeline.from_settings(settings.simulation).history_end, dt.time())
        result = store.read([row[0] for row in active], now=now)
    finally:
        store.close()
    assert len(active) == 5
    for customer in result:
        assert customer.found and not customer.expired_groups
        assert customer.values["tenure_days"] is not None and customer.values["invoice_amount"] is not None


def test_a_broken_landing_file_blocks_features_and_keeps_stored_data(world) -> None:
    settings, weeks, instance, _ = world
    week = weeks[-1]
    path = landing_path(settings.landing_dir, "usage", week)
    original = pl.read_parquet(path)
    before = _feature_rows(settings)
    raw_before = _raw_usage(settings, week)
    try:
        # Every row of the week breaks a range rule: far above the allowed quarantine share.
        original.with_columns(pl.lit(-1, dtype=pl.Int64).alias("calls")).write_parquet(path)
        result = run(settings, [week], instance)
    finally:
        original.write_parquet(path)
    usage_check = [c for c in result.get_asset_check_evaluations() if c.asset_key.path == ["raw", "usage"]]
    assert usage_check and not usage_check[0].passed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert not any(key.startswith("features/") for key in materialized)
    assert _feature_rows(settings) == before
    assert _raw_usage(settings, week).equals(raw_before)


def _raw_usage(settings, week: str) -> pl.DataFrame:
    with Warehouse.of(settings).connect(read_only=True) as con:
        return con.sql(f"SELECT * FROM raw.usage WHERE week_start = '{week}' ORDER BY customer_id").pl()


def _feature_rows(settings) -> int:
    with Warehouse.of(settings).connect(read_only=True) as con:
        return con.execute("SELECT count(*) FROM features.customer_usage").fetchone()[0]  # type: ignore[index]


def test_features_get_reads_the_online_store_at_the_simulated_clock(world) -> None:
    from churn_assets.feature_store.online_read import read_online

    settings, _, _, _ = world
    with Warehouse.of(settings).connect(read_only=True) as con:
        (active,) = con.execute(
            "SELECT min(customer_id) FROM features.customer_usage WHERE event_timestamp = "
            "(SELECT max(event_timestamp) FROM features.customer_usage)"
        ).fetchone()  # type: ignore[misc]
    payload = read_online(settings, [active, 999_999_999])
    known, unknown = payload["customers"]
    assert known["found"] and known["features"]["calls_last_30d"] is not None
    assert set(known["staleness"]) == {g.name for g in FEATURE_GROUPS}
    assert not unknown["found"] and all(v is None for v in unknown["features"].values())
