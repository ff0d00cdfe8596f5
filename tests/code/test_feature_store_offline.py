"""Offline store: point-in-time correctness, TTL, row preservation, schema checks, idempotent writes."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from churn_assets.feature_store.definitions import FEATURE_GROUPS, feature_group
from churn_assets.feature_store.offline import FeatureSchemaError, OfflineStore
from tests.feature_helpers import random_group_frame

T0 = dt.datetime(2024, 1, 1)
T1 = dt.datetime(2024, 2, 5)
T2 = dt.datetime(2024, 3, 4)
CUSTOMERS = [1, 2, 3, 4]


@pytest.fixture
def store() -> OfflineStore:
    """An in-memory store with every group written for CUSTOMERS at T0 and T1."""
    s = OfflineStore(duckdb.connect())
    for i, group in enumerate(FEATURE_GROUPS):
        s.write(group.name, random_group_frame(group, CUSTOMERS, [T0, T1], seed=i))
    return s


def _expected(group: str, customer: int, ts: dt.datetime, seed: int) -> dict[str, object]:
    frame = pl.from_arrow(random_group_frame(group, CUSTOMERS, [T0, T1], seed=seed))
    assert isinstance(frame, pl.DataFrame)
    row = frame.filter((pl.col("customer_id") == customer) & (pl.col("event_timestamp") == ts))
    return row.drop("customer_id", "event_timestamp").row(0, named=True)


def _entity(rows: list[tuple[int, dt.datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"customer_id": pl.Int64, "event_timestamp": pl.Datetime("us")}, orient="row"
    )


def test_newer_feature_row_is_never_used(store: OfflineStore) -> None:
    just_before = T1 - dt.timedelta(microseconds=1)
    out = store.get_historical_features(
        _entity([(2, just_before)]), ["customer_usage"], include_timestamps=True
    )
    assert out["customer_usage__event_timestamp"].to_list() == [T0]
    assert out.drop("customer_id", "event_timestamp", "customer_usage__event_timestamp").row(
        0, named=True
    ) == (_expected("customer_usage", 2, T0, seed=1))


def test_exact_timestamp_match_is_used(store: OfflineStore) -> None:
    out = store.get_historical_features(_entity([(3, T1)]), ["customer_account"])
    assert out.drop("customer_id", "event_timestamp").row(0, named=True) == _expected(
        "customer_account", 3, T1, 0
    )


def test_before_first_snapshot_is_null(store: OfflineStore) -> None:
    out = store.get_historical_features(_entity([(1, T0 - dt.timedelta(seconds=1))]))
    assert out.height == 1
    assert out.drop("customer_id", "event_timestamp").null_count().row(0) == (1,) * 45


def test_ttl_is_honoured_per_group(store: OfflineStore) -> None:
    at_limit = T1 + dt.timedelta(days=35)
    past_35 = at_limit + dt.timedelta(seconds=1)
    past_45 = T1 + dt.timedelta(days=45, seconds=1)
    out = store.get_historical_features(
        _entity([(1, at_limit), (1, past_35), (1, past_45)]), ["tenure_days", "invoice_amount"]
    )
    account = _expected("customer_account", 1, T1, seed=0)["tenure_days"]
    billing = _expected("customer_billing", 1, T1, seed=2)["invoice_amount"]
    assert feature_group("customer_billing").ttl == dt.timedelta(days=45)
    assert out["tenure_days"].to_list() == [account, None, None]
    assert out["invoice_amount"].to_list() == [billing, billing, None]


def test_every_entity_row_comes_back_in_order_with_duplicates_and_unknowns(store: OfflineStore) -> None:
    rows = [(4, T1), (1, T0), (99, T1), (4, T1), (2, T1 + dt.timedelta(days=1)), (4, T1), (1, T0)]
    entity = _entity(rows).with_columns(label=pl.Series(range(len(rows))))
    out = store.get_historical_features(entity, ["login_count_last_7d", "plan_type"])
    assert out.columns == ["customer_id", "event_timestamp", "label", "login_count_last_7d", "plan_type"]
    assert out.select("customer_id", "event_timestamp", "label").equals(entity)
    logins = [
        _expected("customer_usage", c, T1 if t >= T1 else T0, 1)["login_count_last_7d"]
        for c, t in rows
        if c != 99
    ]
    got = out.filter(pl.col("customer_id") != 99)["login_count_last_7d"].to_list()
    assert got == logins
    assert out.filter(pl.col("customer_id") == 99).select("login_count_last_7d", "plan_type").row(0) == (
        None,
        None,
    )


def test_matches_brute_force_reference_on_random_data() -> None:
    """Random customers with gaps in their history vs a row-by-row reference implementation."""
    rng = np.random.default_rng(7)
    s = OfflineStore(duckdb.connect())
    snapshots = [T0 + dt.timedelta(days=28 * i) for i in range(6)]
    frames = {}
    for i, group in enumerate(FEATURE_GROUPS[:3]):
        full = pl.from_arrow(
            random_group_frame(group, list(range(30)), snapshots, seed=10 + i, null_share=0.1)
        )
        assert isinstance(full, pl.DataFrame)
        frames[group.name] = full.sample(fraction=0.6, seed=i).sort("customer_id", "event_timestamp")
        s.write(group.name, frames[group.name])
    n = 300
    times = [T0 - dt.timedelta(days=10) + dt.timedelta(hours=int(h)) for h in rng.integers(0, 24 * 220, n)]
    entity = pl.DataFrame({"customer_id": rng.integers(0, 33, n), "when": times})
    out = s.get_historical_features(
        entity, ["customer_account", "customer_usage", "customer_billing"], timestamp_column="when"
    )
    assert out.height == n
    for row_out, (cid, when) in zip(out.iter_rows(named=True), entity.iter_rows(), strict=True):
        for name, frame in frames.items():
            group = feature_group(name)
            candidates = frame.filter(
                (pl.col("customer_id") == cid)
                & (pl.col("event_timestamp") <= when)
                & (pl.col("event_timestamp") >= when - group.ttl)
            )
            expected = candidates.sort("event_timestamp").row(-1, named=True) if candidates.height else {}
            for feature in group.feature_names:
                assert row_out[feature] == expected.get(feature), (cid, when, name, feature)


def test_entity_frames_from_pandas_and_arrow(store: OfflineStore) -> None:
    rows = {"customer_id": [1, 2], "event_timestamp": [T1, T0], "note": ["a", "b"]}
    from_pl = store.get_historical_features(pl.DataFrame(rows), ["segment"])
    from_pd = store.get_historical_features(pd.DataFrame(rows), ["segment"])
    from_pa = store.get_historical_features(pa.table(rows), ["segment"])
    assert from_pl.equals(from_pd)
    assert from_pl.equals(from_pa)
    assert from_pl.columns == ["customer_id", "event_timestamp", "note", "segment"]


def test_result_dtypes_follow_declarations(store: OfflineStore) -> None:
    out = store.get_historical_features(_entity([(1, T1)]))
    kinds = {"int64": pl.Int64, "float64": pl.Float64, "string": pl.String}
    for group in FEATURE_GROUPS:
        for f in group.features:
            assert out.schema[f.name] == kinds[f.dtype], f.name


def test_wrong_dtype_is_rejected_with_a_clear_error(store: OfflineStore) -> None:
    frame = random_group_frame("customer_usage", [1], [T2])
    bad = frame.set_column(frame.schema.get_field_index("calls_last_30d"), "calls_last_30d", pa.array(["x"]))
    with pytest.raises(FeatureSchemaError, match=r"customer_usage.*calls_last_30d.*float64"):
        store.write("customer_usage", bad)


def test_missing_and_extra_columns_are_rejected(store: OfflineStore) -> None:
    frame = random_group_frame("customer_cohort", [1], [T2])
    with pytest.raises(FeatureSchemaError, match=r"customer_cohort.*missing.*age_band \(string\)"):
        store.write("customer_cohort", frame.drop_columns(["age_band"]))
    with pytest.raises(FeatureSchemaError, match=r"customer_cohort.*unexpected.*surprise"):
        store.write("customer_cohort", frame.append_column("surprise", pa.array([1])))
    with pytest.raises(KeyError, match="unknown feature group"):
        store.write("customer_nope", frame)


def test_duplicate_keys_are_rejected(store: OfflineStore) -> None:
    frame = random_group_frame("customer_cohort", [5], [T2])
    with pytest.raises(FeatureSchemaError, match="duplicate"):
        store.write("customer_cohort", pa.concat_tables([frame, frame]))
    assert store.row_count("customer_cohort") == len(CUSTOMERS) * 2


def test_rewrite_is_idempotent_and_replaces_the_snapshot(store: OfflineStore) -> None:
    before = store.get_historical_features(_entity([(1, T0), (1, T1)]))
    original = random_group_frame("customer_usage", CUSTOMERS, [T0, T1], seed=1)
    store.write("customer_usage", original.filter(pc.equal(original["event_timestamp"], pa.scalar(T1))))
    assert store.row_count("customer_usage") == len(CUSTOMERS) * 2
    assert store.get_historical_features(_entity([(1, T0), (1, T1)])).equals(before)
    # A new version of T1 with fewer customers replaces T1 entirely and leaves T0 alone.
    store.write("customer_usage", random_group_frame("customer_usage", [1], [T1], seed=123))
    assert store.row_count("customer_usage") == len(CUSTOMERS) + 1
    after = store.get_historical_features(_entity([(1, T1), (2, T1), (2, T0)]), ["calls_last_30d"])
    new_value = random_group_frame("customer_usage", [1], [T1], seed=123).column("calls_last_30d")[0].as_py()
    assert after["calls_last_30d"].to_list() == [
        new_value,
        _expected("customer_usage", 2, T0, seed=1)["calls_last_30d"],  # T0 row, still within TTL
        _expected("customer_usage", 2, T0, seed=1)["calls_last_30d"],
    ]


def test_tables_stay_physically_sorted_and_reads_see_new_writes(store: OfflineStore) -> None:
    store.get_historical_features(_entity([(1, T2)]))  # builds the key index
    store.write("customer_account", random_group_frame("customer_account", [4, 0, 2], [T2], seed=5))
    keys = store.con.execute("SELECT customer_id, event_timestamp FROM features.customer_account").fetchall()
    assert keys == sorted(keys)
    out = store.get_historical_features(_entity([(0, T2), (1, T2)]), ["num_lines"], include_timestamps=True)
    assert out["customer_account__event_timestamp"].to_list() == [T2, T1]


def test_latest_snapshot_times_and_row_count(store: OfflineStore) -> None:
    store.write("customer_engagement", random_group_frame("customer_engagement", [1, 7], [T2], seed=3))
    latest = store.latest("customer_engagement")
    assert latest.column("customer_id").to_pylist() == [1, 2, 3, 4, 7]
    assert latest.column("event_timestamp").to_pylist() == [T2, T1, T1, T1, T2]
    assert (
        store.latest("customer_engagement", as_of=T1 - dt.timedelta(days=1))
        .column("event_timestamp")
        .to_pylist()
        == [T0] * 4
    )
    assert store.snapshot_times("customer_engagement") == [T0, T1, T2]
    assert store.row_count("customer_engagement") == 10


def test_clashing_entity_column_is_rejected(store: OfflineStore) -> None:
    entity = _entity([(1, T1)]).with_columns(plan_type=pl.lit("x"))
    with pytest.raises(ValueError, match="plan_type"):
        store.get_historical_features(entity, ["plan_type"])


def test_write_batches_equals_one_write_per_group(tmp_path) -> None:
    from churn_assets.feature_store.offline import table_name
    from tests.feature_helpers import random_group_frame as group_frame

    t1, t2 = dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 5)
    group = FEATURE_GROUPS[1]
    first, second = group_frame(group, [1, 2, 3], [t1], seed=1), group_frame(group, [1, 2, 3], [t2], seed=2)
    batched = OfflineStore(duckdb.connect(str(tmp_path / "a.duckdb")))
    single = OfflineStore(duckdb.connect(str(tmp_path / "b.duckdb")))
    rows = batched.write_batches([{group.name: first}, {group.name: second}])
    single.write(group.name, pa.concat_tables([first, second]))
    assert rows == {group.name: 6}
    query = f"SELECT * EXCLUDE (created_at) FROM {table_name(group)} ORDER BY ALL"
    assert batched.con.sql(query).fetchall() == single.con.sql(query).fetchall()
