"""Online store, both backends: typed round trip, staleness, TTL enforcement, missing customers.

Redis tests run against the real server (``redis_url`` fixture fails loudly when it is down) with a
unique key prefix per test, deleted afterwards.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from churn_assets.feature_store.definitions import FEATURE_GROUPS, all_features, feature_group
from churn_assets.feature_store.offline import FeatureSchemaError
from churn_assets.feature_store.online import (
    OnlineStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    make_online_store,
)
from churn_assets.settings import FeatureStoreSettings, Settings
from tests.feature_helpers import random_group_frame

T = dt.datetime(2024, 3, 4)
CUSTOMERS = list(range(1, 51))


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.service)])
def online(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    store: OnlineStore
    if request.param == "sqlite":
        store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisOnlineStore(url, f"churnops-test:{uuid.uuid4().hex}")
    try:
        yield store
    finally:
        store.clear()
        store.close()


def _frames(null_share: float = 0.2) -> dict[str, pa.Table]:
    return {
        g.name: random_group_frame(g, CUSTOMERS, [T], seed=i, null_share=null_share)
        for i, g in enumerate(FEATURE_GROUPS)
    }


def _write_all(store: OnlineStore, frames: dict[str, pa.Table], now: dt.datetime = T) -> None:
    for name, frame in frames.items():
        assert store.write(name, frame, now=now) == len(CUSTOMERS)


def test_round_trip_keeps_values_and_types(online: OnlineStore) -> None:
    frames = _frames()
    _write_all(online, frames)
    result = online.read([3, 17], now=T + dt.timedelta(hours=1))
    assert [c.customer_id for c in result] == [3, 17]
    assert result.features == [f.name for f in all_features()]
    python_types = {"int64": int, "float64": float, "string": str}
    for customer in result:
        assert customer.found and not customer.expired_groups and not customer.missing_groups
        for group in FEATURE_GROUPS:
            expected = frames[group.name].to_pylist()[CUSTOMERS.index(customer.customer_id)]
            for feature in group.features:
                value = customer.values[feature.name]
                assert value == expected[feature.name]
                assert value is None or type(value) is python_types[feature.dtype]


def test_staleness_and_event_timestamps_are_reported(online: OnlineStore) -> None:
    _write_all(online, _frames())
    now = T + dt.timedelta(days=3, minutes=5)
    customer = online.read([1], now=now)[1]
    for group in FEATURE_GROUPS:
        state = customer.groups[group.name]
        assert state.event_timestamp == T
        assert state.staleness == dt.timedelta(days=3, minutes=5)
        assert state.served


def test_expired_group_reads_as_none(online: OnlineStore) -> None:
    frames = _frames(null_share=0.0)
    _write_all(online, frames)
    now = T + dt.timedelta(days=40)  # past the 35-day TTLs, within customer_billing's 45 days
    customer = online.read([5], now=now)[5]
    assert sorted(customer.expired_groups) == sorted(
        g.name for g in FEATURE_GROUPS if g.ttl < dt.timedelta(days=40)
    )
    assert customer.groups["customer_usage"].staleness == dt.timedelta(days=40)
    assert customer.values["calls_last_30d"] is None
    assert customer.values["invoice_amount"] == frames["customer_billing"].to_pylist()[4]["invoice_amount"]
    # At exactly the TTL the value is still served.
    at_ttl = online.read([5], ["tenure_days"], now=T + feature_group("customer_account").ttl)[5]
    assert at_ttl.values["tenure_days"] == frames["customer_account"].to_pylist()[4]["tenure_days"]
    # A value from the future (event_timestamp > now) is never served either.
    assert online.read([5], ["tenure_days"], now=T - dt.timedelta(seconds=1))[5].values == {
        "tenure_days": None
    }


def test_missing_customer_and_feature_subset(online: OnlineStore) -> None:
    _write_all(online, _frames())
    result = online.read([2, 10_000], ["plan_type", "customer_usage:calls_last_30d"], now=T)
    assert result.features == ["plan_type", "calls_last_30d"]
    missing = result[10_000]
    assert not missing.found
    assert missing.values == {"plan_type": None, "calls_last_30d": None}
    assert sorted(missing.missing_groups) == ["customer_account", "customer_usage"]
    assert set(result[2].groups) == {"customer_account", "customer_usage"}


def test_many_customers_in_one_read_keep_request_order(online: OnlineStore) -> None:
    frames = _frames()
    _write_all(online, frames)
    ids = [*reversed(CUSTOMERS), 999, 7, 7]
    result = online.read(ids, now=T)
    assert [c.customer_id for c in result] == ids
    frame = result.to_polars()
    assert frame.height == len(ids)
    assert frame["customer_id"].to_list() == ids
    expected = pl.from_arrow(frames["customer_usage"])
    assert isinstance(expected, pl.DataFrame)
    joined = (
        frame.head(len(CUSTOMERS))
        .select("customer_id", "calls_last_30d")
        .join(expected.select("customer_id", "calls_last_30d"), on="customer_id", suffix="_expected")
    )
    assert joined.height == len(CUSTOMERS)
    assert joined["calls_last_30d"].equals(joined["calls_last_30d_expected"])
    assert frame.row(len(CUSTOMERS), named=True)["tenure_days"] is None


def test_write_keeps_the_newest_row_per_customer_and_skips_expired_rows(online: OnlineStore) -> None:
    old, new = T - dt.timedelta(days=28), T
    frame = random_group_frame("customer_cohort", [1, 2], [old, new], seed=3)
    assert online.write("customer_cohort", frame, now=T) == 2
    customer = online.read([1], ["customer_cohort"], now=T)[1]
    assert customer.groups["customer_cohort"].event_timestamp == new
    assert customer.values == {k: v for k, v in frame.to_pylist()[1].items() if k in customer.values}
    stale = random_group_frame("customer_cohort", [3], [T - dt.timedelta(days=36)], seed=4)
    assert online.write("customer_cohort", stale, now=T) == 0
    assert not online.read([3], ["customer_cohort"], now=T)[3].found


def test_write_validates_the_frame(online: OnlineStore) -> None:
    frame = random_group_frame("customer_usage", [1], [T]).drop_columns(["sms_last_30d"])
    with pytest.raises(FeatureSchemaError, match="sms_last_30d"):
        online.write("customer_usage", frame, now=T)


@pytest.mark.service
def test_redis_keys_expire_after_the_largest_group_ttl(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, f"churnops-test:{uuid.uuid4().hex}")
    try:
        now = T + dt.timedelta(days=10)
        store.write("customer_usage", random_group_frame("customer_usage", [1], [T]), now=now)
        remaining = dt.timedelta(days=35) - dt.timedelta(days=10)
        ttl_ms = store.client.pttl(store.key(1))
        assert abs(ttl_ms - remaining / dt.timedelta(milliseconds=1)) < 60_000
        # A group with a longer TTL extends the key's life; a shorter one never shortens it.
        store.write("customer_billing", random_group_frame("customer_billing", [1], [T]), now=now)
        longer = (dt.timedelta(days=45) - dt.timedelta(days=10)) / dt.timedelta(milliseconds=1)
        assert abs(store.client.pttl(store.key(1)) - longer) < 60_000
        store.write("customer_cohort", random_group_frame("customer_cohort", [1], [T]), now=now)
        assert abs(store.client.pttl(store.key(1)) - longer) < 60_000
        assert sorted(store.client.hkeys(store.key(1))) == [
            b"customer_billing",
            b"customer_cohort",
            b"customer_usage",
        ]
    finally:
        store.clear()
        store.close()
    assert store.client.keys(f"{store.key_prefix}:*") == []


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "o.sqlite")
    try:
        assert store.con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()


def test_factory_chooses_the_backend(tmp_path: Path) -> None:
    sqlite_store = make_online_store(Settings(home=tmp_path))
    assert isinstance(sqlite_store, SQLiteOnlineStore)
    assert sqlite_store.path == tmp_path.resolve() / "online_store.sqlite"
    sqlite_store.close()
    settings = Settings(
        home=tmp_path, feature_store=FeatureStoreSettings(online_backend="redis", redis_key_prefix="x")
    )
    redis_store = make_online_store(settings)
    assert isinstance(redis_store, RedisOnlineStore)
    assert redis_store.key(5) == "x:5"
    redis_store.close()


@pytest.mark.service
def test_the_dagster_resource_opens_the_store_the_factory_makes(redis_url: str, tmp_path: Path) -> None:
    """The code location's online store is the domain factory's: every feature-store setting applies."""
    from churn_assets.defs.resources import build_resources

    fs = FeatureStoreSettings(
        online_backend="redis", redis_url=redis_url, redis_key_prefix="churnops-test:res", redis_batch_size=7
    )
    settings = Settings(home=tmp_path, feature_store=fs)
    store = build_resources(settings)["online_store"].open()
    try:
        assert isinstance(store, RedisOnlineStore)
        assert (store.url, store.key_prefix, store.batch_size) == (redis_url, "churnops-test:res", 7)
    finally:
        store.close()
