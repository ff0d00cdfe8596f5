"""The prediction log: count sent == count stored, across a writer restart and a killed writer."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from churn_assets.serving.prediction_log import (
    PREDICTION_LOG_SCHEMA,
    PredictionLogError,
    PredictionLogWriter,
    read_predictions,
    wal_dir,
    write_predictions,
)
from churn_assets.settings import Settings

T0 = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.UTC)


def record(i: int, variant: str = "champion") -> dict[str, object]:
    return {
        "ts": T0 + dt.timedelta(seconds=i),
        "request_id": f"r{i}",
        "customer_id": i,
        "model_name": "churn-model",
        "model_version": "2",
        "variant": variant,
        "score": i / 1000,
        "label": int(i % 2),
        "threshold": 0.5,
        "latency_ms": 1.5,
        "feature_hash": "abc",
        "source": "http",
        "as_of": dt.date(2025, 6, 2),
    }


def test_every_record_sent_is_stored_across_a_writer_restart(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    writer = PredictionLogWriter(settings, flush_seconds=None, flush_rows=700)

    def send(start: int) -> None:
        for i in range(start, start + 500):
            writer.append([record(i)])

    threads = [threading.Thread(target=send, args=(k * 500,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()  # the "restart": flush on shutdown
    second = PredictionLogWriter(settings, flush_seconds=None)
    second.append([record(i, "shadow") for i in range(2_000, 2_300)])
    second.close()
    stored = read_predictions(settings)
    assert stored.height == 2_300
    assert stored["request_id"].n_unique() == 2_300
    assert stored.schema == pl.Schema(PREDICTION_LOG_SCHEMA)
    assert stored["ts"][0] == T0 and stored["as_of"][0] == dt.date(2025, 6, 2)
    assert stored.filter(pl.col("variant") == "shadow").height == 300
    window = read_predictions(settings, T0 + dt.timedelta(seconds=100), T0 + dt.timedelta(seconds=200))
    assert window.height == 100 and window["customer_id"].min() == 100


def test_background_flush_writes_segments_without_close(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    writer = PredictionLogWriter(settings, flush_seconds=0.05)
    writer.append([record(i) for i in range(10)])
    deadline = dt.datetime.now() + dt.timedelta(seconds=5)
    while read_predictions(settings).height < 10 and dt.datetime.now() < deadline:
        threading.Event().wait(0.05)
    assert read_predictions(settings).height == 10
    writer.close()
    assert read_predictions(settings).height == 10


_KILLED_WRITER = """
import datetime as dt, os, sys
from churn_assets.settings import Settings
from churn_assets.serving.prediction_log import PredictionLogWriter
from tests.serving.test_prediction_log import record
w = PredictionLogWriter(Settings(home=sys.argv[1]), flush_seconds=None, flush_rows=10_000)
w.append([record(i) for i in range(250)])
w.flush()
w.append([record(i) for i in range(250, 400)])
os._exit(9)  # killed: no flush, no close
"""


def test_a_killed_writers_unflushed_records_are_recovered_by_the_next_writer(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], cwd=root, env={**os.environ}, check=False
    )
    assert proc.returncode == 9
    assert read_predictions(settings).height == 250  # flushed part only
    assert list(wal_dir(settings).glob("*.wal"))
    writer = PredictionLogWriter(settings, flush_seconds=None)
    assert writer.recovered == 150
    writer.close()
    assert read_predictions(settings).height == 400
    assert not list(wal_dir(settings).glob("*.wal"))


def test_a_live_writer_recovers_a_killed_writers_records_within_its_flush_interval(tmp_path: Path) -> None:
    """The surviving workers of a service store a killed worker's records themselves: a writer that
    started before the kill finds the orphaned WAL at its next flush interval (no new writer starts)."""
    settings = Settings(home=tmp_path)
    live = PredictionLogWriter(settings, flush_seconds=0.05)
    try:
        root = Path(__file__).resolve().parents[2]
        proc = subprocess.run(
            [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], cwd=root, env={**os.environ}, check=False
        )
        assert proc.returncode == 9
        deadline = time.monotonic() + 10
        while read_predictions(settings).height < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.recovered == 150
        assert read_predictions(settings).height == 400
        assert [p.name for p in wal_dir(settings).glob("*.wal")] == [live.wal_path.name]
    finally:
        live.close()


def test_writers_flushing_and_recovering_side_by_side_store_every_record_once(tmp_path: Path) -> None:
    """Four writers append, flush and look for orphans every 10 ms while one of them is closed and
    replaced: no record is lost, none stored twice (a rotated WAL is removed before its lock is
    released, so no writer ever recovers rows that are already in a segment)."""
    settings = Settings(home=tmp_path)
    writers = [PredictionLogWriter(settings, flush_seconds=0.01) for _ in range(4)]
    stop = threading.Event()
    appended: list[int] = []
    lock = threading.Lock()

    def append(k: int) -> None:
        i = 0
        while not stop.is_set():
            cid = k * 1_000_000 + i
            writers[k].append([record(cid)])
            with lock:
                appended.append(cid)
            i += 1
            time.sleep(0.001)

    threads = [threading.Thread(target=append, args=(k,), daemon=True) for k in range(1, 4)]
    for t in threads:
        t.start()
    try:
        for j in range(20):  # writer 0: closed and replaced over and over while the others run
            writers[0].append([record(500_000 + 5 * j + i) for i in range(5)])
            writers[0].close()
            writers[0] = PredictionLogWriter(settings, flush_seconds=0.01)
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    for w in writers:
        w.close()
    stored = read_predictions(settings)
    ids = stored.filter(pl.col("customer_id") >= 1_000_000)["customer_id"].to_list()
    assert sorted(ids) == sorted(appended) and len(appended) > 100
    first = stored.filter(pl.col("customer_id") < 1_000_000)["customer_id"].to_list()
    assert sorted(first) == list(range(500_000, 500_100))
    assert stored["request_id"].n_unique() == stored.height


def test_a_live_writers_wal_is_not_recovered_by_another(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    first = PredictionLogWriter(settings, flush_seconds=None)
    first.append([record(1)])
    second = PredictionLogWriter(settings, flush_seconds=None)
    assert second.recovered == 0
    second.close()
    first.close()
    assert read_predictions(settings).height == 1


def test_batch_write_and_bad_records(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    frame = pl.DataFrame([record(i) for i in range(5)]).with_columns(source=pl.lit("batch"))
    assert write_predictions(settings, frame) == 5
    assert read_predictions(settings)["source"].to_list() == ["batch"] * 5
    with pytest.raises(PredictionLogError, match="variant"):
        PredictionLogWriter(settings, flush_seconds=None).append([record(1, "blue")])
    with pytest.raises(PredictionLogError, match="score"):
        write_predictions(settings, frame.drop("score"))
    with pytest.raises(PredictionLogError, match=r"misses field\(s\) \['customer_id'\]"):
        bad = record(1)
        del bad["customer_id"]
        PredictionLogWriter(settings, flush_seconds=None).append([bad])
