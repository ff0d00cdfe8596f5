"""Training set: labels, point-in-time correctness, split disjointness, bad input (no Dagster run needed,
except one thin asset materialization on a synthetic warehouse)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from churn_assets.defs.assets.training import training_set as training_set_asset
from churn_assets.defs.resources import build_resources
from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.feature_store.offline import OfflineStore
from churn_assets.modeling.splits import TrainingDataError, build_splits
from churn_assets.modeling.training_set import (
    AS_OF,
    LABEL,
    PERIOD,
    SPLIT,
    build_training_set,
    build_training_table,
    check_point_in_time,
    check_split_disjoint,
    check_training_set,
    feature_names,
    label_complete_until,
    label_snapshots,
    model_inputs,
    read_split,
    write_training_set,
)
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import ModelingSettings, Settings, SimulationSettings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from tests.feature_helpers import random_group_frame

N_CUSTOMERS = 300
MONTHS = 6
TIMELINE = Timeline(start_date=dt.date(2023, 10, 2), history_months=MONTHS)
SNAPS = list(TIMELINE.monthly_snapshots)  # 2024-01-01 .. 2024-06-03
DAY = dt.timedelta(days=1)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


def _churn_events(rows: list[tuple[int, dt.date]], delay_days: int = 7) -> pd.DataFrame:
    """raw.churn_events rows: (customer, cancellation date) reported ``delay_days`` later (landing week)."""
    out = []
    for customer, cancel in rows:
        report = cancel + dt.timedelta(days=delay_days)
        week = report - dt.timedelta(days=report.weekday())
        out.append({"customer_id": customer, "cancellation_date": cancel, "week_start": week})
    return pd.DataFrame(out)


def _make_warehouse(path: Path, churn: pd.DataFrame, *, future_rows: bool = True) -> None:
    """Every group at every snapshot for every customer, plus (``future_rows``) usage rows 3 days after
    each snapshot holding absurd values that must never reach the training set."""
    ids = list(range(1, N_CUSTOMERS + 1))
    with Warehouse(path).connect() as con:
        Warehouse.ensure_schemas(con)
        store = OfflineStore(con)
        for i, group in enumerate(FEATURE_GROUPS):
            store.write(group.name, random_group_frame(group, ids, [_midnight(d) for d in SNAPS], seed=i))
        if future_rows:
            later = random_group_frame(
                "customer_usage", ids, [_midnight(d + 3 * DAY) for d in SNAPS], seed=99
            )
            later = later.set_column(
                later.schema.get_field_index("calls_last_30d"),
                "calls_last_30d",
                pa.array(np.full(later.num_rows, -1.0)),
            )
            store.write("customer_usage", later)
        con.register("churn_df", churn)
        con.execute(
            "INSERT INTO raw.churn_events BY NAME SELECT customer_id, cancellation_date, "
            "CAST(week_start AS DATE) AS week_start FROM churn_df"
        )


def _settings(home: Path, **modeling: object) -> Settings:
    defaults: dict[str, object] = {"train_periods": (1, 3), "val_periods": (4, 4), "test_periods": (5, 6)}
    return Settings(
        home=home,
        simulation=SimulationSettings(history_months=MONTHS, label_delay_weeks=1),
        modeling=ModelingSettings(**(defaults | modeling)),  # type: ignore[arg-type]
    )


def _standard_churn() -> pd.DataFrame:
    """Churners spread over the months (every 7th customer), plus a late reporter defining the data end."""
    rows = [(c, SNAPS[0] + dt.timedelta(days=(c * 13) % 250)) for c in range(7, N_CUSTOMERS, 7)]
    rows.append((N_CUSTOMERS, SNAPS[-1] + dt.timedelta(days=120)))  # data end after every window
    return _churn_events(rows)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "warehouse.duckdb"
    _make_warehouse(path, _standard_churn())
    return path


# -- labels --------------------------------------------------------------------------------------


def test_label_window_is_cancellation_before_as_of_plus_horizon(tmp_path: Path) -> None:
    t = SNAPS[1]
    churn = _churn_events(
        [
            (1, t + 10 * DAY),  # inside the window -> 1
            (2, t + 89 * DAY),  # last day of the window -> 1
            (3, t + 90 * DAY),  # first day after -> 0
            (4, t - 3 * DAY),  # cancelled before T, not yet reported at T (still in the snapshot) -> 1
            (N_CUSTOMERS, t + 200 * DAY),  # sets the data end
        ]
    )
    path = tmp_path / "w.duckdb"
    _make_warehouse(path, churn, future_rows=False)
    with Warehouse(path).connect() as con:
        labels = label_snapshots(con, [t], 90, report_delay_days=7)
    by_customer = labels.set_index("customer_id")[LABEL]
    assert by_customer[1] == 1 and by_customer[2] == 1 and by_customer[4] == 1
    assert by_customer[3] == 0 and by_customer[5] == 0
    assert len(labels) == N_CUSTOMERS  # one row per customer of the snapshot
    assert set(labels[AS_OF]) == {t}


def test_entities_are_the_customer_account_rows_of_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    _make_warehouse(path, _standard_churn(), future_rows=False)
    with Warehouse(path).connect() as con:
        con.execute(
            "DELETE FROM features.customer_account WHERE customer_id > 250 AND event_timestamp = $t",
            {"t": _midnight(SNAPS[2])},
        )
        labels = label_snapshots(con, SNAPS[:3], 90)
    counts = labels.groupby(AS_OF).size()
    assert counts[SNAPS[0]] == N_CUSTOMERS and counts[SNAPS[2]] == 250


def test_incomplete_label_window_raises_or_is_dropped(tmp_path: Path) -> None:
    last = SNAPS[-1]
    end = label_complete_until(last, 90, 7)
    # the report week of the window's last day must have landed: one day short is incomplete
    assert end - last > dt.timedelta(days=90)
    churn = _churn_events([(1, last + 80 * DAY - dt.timedelta(days=7))])  # data end well before `end`
    path = tmp_path / "w.duckdb"
    _make_warehouse(path, churn, future_rows=False)
    with Warehouse(path).connect() as con:
        with pytest.raises(TrainingDataError, match="incomplete label window"):
            label_snapshots(con, [last], 90, report_delay_days=7)
        kept = label_snapshots(con, SNAPS, 90, report_delay_days=7, on_incomplete="drop")
        assert last.isoformat() in kept.attrs["incomplete"]
        assert last not in set(kept[AS_OF])
        with pytest.raises(TrainingDataError, match="incomplete label window"):
            label_snapshots(con, [SNAPS[0]], 90, end=SNAPS[0] + 90 * DAY)


def test_missing_snapshot_and_no_churn_reports_name_the_cause(tmp_path: Path, warehouse: Path) -> None:
    with Warehouse(warehouse).connect() as con, pytest.raises(TrainingDataError, match="no feature snapshot"):
        label_snapshots(con, [SNAPS[0] + 7 * DAY], 90)
    path = tmp_path / "w.duckdb"
    _make_warehouse(
        path, _churn_events([]).reindex(columns=["customer_id", "cancellation_date", "week_start"])
    )
    with (
        Warehouse(path).connect() as con,
        pytest.raises(TrainingDataError, match=r"raw\.churn_events is empty"),
    ):
        label_snapshots(con, SNAPS, 90)


# -- the training set ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_polars(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, dict]:
    settings = _settings(tmp_path_factory.mktemp("home"))
    with Warehouse(warehouse).connect() as con:
        return build_training_table(con, TIMELINE, settings)


@pytest.fixture(scope="module")
def built(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict]:
    settings = _settings(tmp_path_factory.mktemp("home"))
    with Warehouse(warehouse).connect() as con:
        return build_training_set(con, TIMELINE, settings)  # the pandas form


def test_training_set_columns_periods_splits_and_metadata(built) -> None:
    frame, meta = built
    assert list(frame.columns[:5]) == ["customer_id", AS_OF, PERIOD, SPLIT, LABEL]
    assert list(frame.columns[5:]) == feature_names() and len(feature_names()) == 45
    assert sorted(set(frame[PERIOD])) == list(range(1, MONTHS + 1))
    assert dict(zip(frame[AS_OF].dt.date, frame[PERIOD], strict=True)) == {
        d: i for i, d in enumerate(SNAPS, 1)
    }
    assert {p: s for p, s in zip(frame[PERIOD], frame[SPLIT], strict=True)} == {
        1: "train",
        2: "train",
        3: "train",
        4: "val",
        5: "test",
        6: "test",
    }
    assert isinstance(frame["plan_type"].dtype, pd.CategoricalDtype)
    for split in ("train", "val", "test"):
        s = meta["splits"][split]
        part = frame[frame[SPLIT] == split]
        assert s["rows"] == len(part) and s["positive_rate"] == pytest.approx(part[LABEL].mean())
    assert meta["splits"]["val"]["first_as_of"] == SNAPS[3].isoformat()
    assert meta["rows"] == len(frame) == MONTHS * N_CUSTOMERS
    assert meta["excluded_snapshots"] == [] and len(meta["sha256"]) == 64


def test_splits_read_back_as_float32_and_fixed_categories(built_polars, built, tmp_path: Path) -> None:
    frame, meta = built_polars
    path = write_training_set(frame, tmp_path / "training_set.parquet")
    expected, _ = built
    categorical = set(meta["categories"])
    assert categorical == {c for c in feature_names() if isinstance(expected[c].dtype, pd.CategoricalDtype)}
    for split in ("train", "val", "test"):
        X, y = read_split(path, split, meta["features"], meta["categories"])
        want = expected[expected[SPLIT] == split].reset_index(drop=True)
        assert list(X.columns) == meta["features"] and len(X) == meta["splits"][split]["rows"]
        np.testing.assert_array_equal(y.to_numpy(), want[LABEL].to_numpy())
        for col in meta["features"]:
            if col in categorical:  # the SAME category list in every split (codes agree with the model)
                assert list(X[col].cat.categories) == meta["categories"][col]
                assert X[col].astype(object).where(X[col].notna(), None).tolist() == (
                    want[col].astype(object).where(want[col].notna(), None).tolist()
                )
            else:
                assert X[col].dtype == np.float32
                np.testing.assert_allclose(X[col], want[col].astype(float), rtol=1e-6, equal_nan=True)
    X, y = read_split(path, "train", meta["features"], meta["categories"], with_features=False)
    assert X.shape == (meta["splits"]["train"]["rows"], 0) and len(y) == len(X)


def test_training_set_check_names_an_empty_or_single_class_split(built) -> None:
    _, meta = built
    check_training_set(meta)
    one_class = {**meta, "splits": {**meta["splits"], "val": {**meta["splits"]["val"], "positives": 0}}}
    with pytest.raises(TrainingDataError, match="the val split has a single class"):
        check_training_set(one_class)
    empty = {**meta, "splits": {**meta["splits"], "test": {**meta["splits"]["test"], "rows": 0}}}
    with pytest.raises(TrainingDataError, match="the test split is empty"):
        check_training_set(empty)


def test_no_feature_timestamp_after_the_as_of_date(warehouse: Path, built) -> None:
    frame, meta = built
    assert meta["leakage_feature_timestamps_after_as_of"] == 0
    # The usage rows written 3 days after each snapshot (calls = -1) never reach the training set.
    assert (frame["calls_last_30d"] >= 0).all()
    # Values are exactly those of the snapshot row at the as-of date.
    with Warehouse(warehouse).connect() as con:
        stored = con.execute(
            "SELECT customer_id, CAST(event_timestamp AS DATE) AS as_of, invoice_amount FROM features.customer_billing"
        ).df()
    stored["as_of"] = pd.to_datetime(stored["as_of"]).astype(frame[AS_OF].dtype)
    merged = frame[["customer_id", AS_OF, "invoice_amount"]].merge(stored, on=["customer_id", AS_OF])
    assert len(merged) == len(frame)
    np.testing.assert_allclose(merged["invoice_amount_x"], merged["invoice_amount_y"])


def test_leakage_check_catches_a_future_feature_timestamp() -> None:
    frame = pd.DataFrame(
        {
            AS_OF: [SNAPS[0], SNAPS[1]],
            "customer_usage__event_timestamp": [_midnight(SNAPS[0]), _midnight(SNAPS[1] + DAY)],
        }
    )
    with pytest.raises(TrainingDataError, match="point-in-time leakage: 1"):
        check_point_in_time(frame)


def test_no_customer_month_in_two_splits(built) -> None:
    frame, _ = built
    assert not frame.duplicated(["customer_id", PERIOD]).any()
    assert (frame.groupby(["customer_id", PERIOD])[SPLIT].nunique() == 1).all()
    splits_of_period = frame.groupby(PERIOD)[SPLIT].unique()
    assert all(len(s) == 1 for s in splits_of_period)
    check_split_disjoint(frame)
    broken = pd.concat([frame.head(3), frame.head(1).assign(**{SPLIT: "test"})])
    with pytest.raises(TrainingDataError, match="duplicate customer-month"):
        check_split_disjoint(broken)


# -- bad input: fails naming the cause, registry untouched -----------------------------------------


def _state_dirs(home: Path) -> list[str]:
    return (
        sorted(p.name for p in home.iterdir() if p.name in ("mlflow", "optuna", "registry"))
        if home.exists()
        else []
    )


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda f: f.assign(**{LABEL: 0}), "single class"),
        (lambda f: f.drop(columns=["tenure_days"]), r"missing feature column\(s\): \['tenure_days'\]"),
        (lambda f: f.assign(**{LABEL: f[LABEL].astype(float).where(f.index != 5, np.nan)}), "NaN"),
        (lambda f: f.assign(**{LABEL: f[LABEL].astype(float).where(f.index != 5, np.inf)}), "infinite"),
        (lambda f: f[f[SPLIT] != "val"], "the val split is empty"),
    ],
    ids=["one-class", "missing-feature", "nan-label", "inf-label", "empty-split"],
)
def test_bad_training_set_fails_naming_the_cause(built, corrupt, message: str, tmp_path: Path) -> None:
    frame, _ = built
    X, y, assignment = model_inputs(corrupt(frame.copy()))
    with pytest.raises(TrainingDataError, match=message):
        build_splits(X, y, assignment, features=feature_names(), kind="time")


def test_training_set_asset_fails_on_one_class_and_leaves_the_registry_untouched(tmp_path: Path) -> None:
    path = tmp_path / "home" / "warehouse.duckdb"
    path.parent.mkdir()
    # Only one churner, reported long after every window: every label is 0.
    _make_warehouse(path, _churn_events([(N_CUSTOMERS, SNAPS[-1] + 300 * DAY)]), future_rows=False)
    settings = _settings(tmp_path / "home")
    resources = build_resources(settings)
    result = dg.materialize([training_set_asset], resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "single class" in str(failure.step_failure_data.error)
    assert _state_dirs(settings.home) == []  # no MLflow / Optuna / registry state was created
    assert not TrainingWorkdir.of(settings).training_set.exists()
