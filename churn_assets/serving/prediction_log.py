"""The durable, append-only log of every prediction (HTTP service and batch scoring).

Storage (``settings.prediction_log_dir``, default ``home/prediction_log``):

* ``segments/seg-<first ts µs>-<pid>-<seq>.parquet`` — immutable Parquet segments, one per flush,
  written to a temporary name and renamed (a reader never sees half a segment).
* ``wal/<pid>-<uuid>.wal`` — each live :class:`PredictionLogWriter` appends every record as one
  orjson line to its own write-ahead file *before* buffering it, and holds an exclusive ``flock`` on
  it. A flush writes the buffer as a segment and truncates the WAL. A writer that died without
  flushing (crash, ``SIGKILL``) leaves its WAL behind unlocked; a writer recovers such files into a
  segment when it starts and, with a flush thread, at every flush interval — so the surviving workers of
  a service store a killed worker's records within one interval, without waiting for its replacement.
  So: every appended record ends up in exactly one segment after a clean close, and after a crash once
  any writer runs (a crash between a segment's rename and the WAL's truncation would store that flush
  twice; records carry ``request_id`` to spot it).

:func:`read_predictions` reads the segments (flushed records only).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from churn_assets.settings import Settings

PREDICTION_LOG_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "request_id": pl.Utf8(),
    "customer_id": pl.Int64(),
    "model_name": pl.Utf8(),
    "model_version": pl.Utf8(),
    "variant": pl.Utf8(),
    "score": pl.Float64(),
    "label": pl.Int8(),
    "threshold": pl.Float64(),
    "latency_ms": pl.Float64(),
    "feature_hash": pl.Utf8(),
    "source": pl.Utf8(),
    "as_of": pl.Date(),
}
COLUMNS = tuple(PREDICTION_LOG_SCHEMA)
VARIANTS = ("champion", "canary", "shadow")
SOURCES = ("http", "batch")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)
# Raw (primitive) column types of a buffered row: ts as epoch µs, as_of as epoch days.
_RAW_SCHEMA: dict[str, pl.DataType] = {
    **PREDICTION_LOG_SCHEMA,
    "ts": pl.Int64(),
    "as_of": pl.Int32(),
    "label": pl.Int64(),
}


class PredictionLogError(ValueError):
    """A record does not fit the prediction-log schema (names the field and the rule)."""


def segments_dir(settings: Settings) -> Path:
    return settings.prediction_log_dir / "segments"


def wal_dir(settings: Settings) -> Path:
    return settings.prediction_log_dir / "wal"


def _ts_us(value: Any) -> int:
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        delta = aware - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, int | float):  # epoch seconds
        return int(value * 1_000_000)
    raise PredictionLogError(f"prediction log field 'ts': expected a datetime, got {type(value).__name__}")


def _days(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return (value - _EPOCH_DATE).days
    if isinstance(value, str):
        return (dt.date.fromisoformat(value) - _EPOCH_DATE).days
    raise PredictionLogError(f"prediction log field 'as_of': expected a date, got {type(value).__name__}")


def to_raw_row(record: Mapping[str, Any]) -> list[Any]:
    """One record as a list of primitives in column order (validated)."""
    missing = [c for c in COLUMNS if c not in record and c not in ("as_of", "feature_hash")]
    if missing:
        raise PredictionLogError(f"prediction log record misses field(s) {missing}")
    variant, source = record["variant"], record["source"]
    if variant not in VARIANTS:
        raise PredictionLogError(f"prediction log field 'variant': {variant!r} not one of {VARIANTS}")
    if source not in SOURCES:
        raise PredictionLogError(f"prediction log field 'source': {source!r} not one of {SOURCES}")
    return [
        _ts_us(record["ts"]),
        str(record["request_id"]),
        int(record["customer_id"]),
        str(record["model_name"]),
        str(record["model_version"]),
        variant,
        float(record["score"]),
        int(record["label"]),
        float(record["threshold"]),
        float(record["latency_ms"]),
        record.get("feature_hash"),
        source,
        _days(record.get("as_of")),
    ]


def frame_from_raw(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Primitive rows -> a frame with :data:`PREDICTION_LOG_SCHEMA`."""
    raw = pl.DataFrame(rows, schema=_RAW_SCHEMA, orient="row")
    return raw.with_columns(
        pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        pl.col("as_of").cast(pl.Date),
        pl.col("label").cast(pl.Int8),
    )


def _write_segment(directory: Path, frame: pl.DataFrame, seq: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    first = int(frame["ts"].dt.epoch("us").min() or 0)  # type: ignore[arg-type]
    final = directory / f"seg-{first:017d}-{os.getpid()}-{seq:06d}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = final.with_suffix(".tmp")
    frame.write_parquet(tmp, statistics=True)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def _parse_wal(data: bytes) -> list[list[Any]]:
    rows = []
    for line in data.splitlines():
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:  # a line torn by a crash mid-write
            continue
    return rows


def recover_orphans(settings: Settings) -> int:
    """Turn WAL files of dead writers (no lock held) into segments; returns the rows recovered."""
    directory = wal_dir(settings)
    if not directory.exists():
        return 0
    recovered = 0
    for path in sorted(directory.glob("*.wal")):
        try:
            fh = open(path, "rb+")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            continue
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer owns it, or another writer is recovering it
                continue
            if os.fstat(fh.fileno()).st_nlink == 0:  # recovered and removed by another writer meanwhile
                continue
            rows = _parse_wal(fh.read())
            if rows:
                _write_segment(segments_dir(settings), frame_from_raw(rows), 0)
                recovered += len(rows)
            path.unlink(missing_ok=True)
    # A writer that died between creating its WAL and naming it left an empty ``.tmp`` file (a writer
    # names it microseconds after creating it: one a minute old is abandoned).
    for tmp in directory.glob(".*.wal.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - tmp.stat().st_mtime > 60:
                tmp.unlink()
    return recovered


class PredictionLogWriter:
    """Thread-safe writer: ``append`` is a WAL line write + a list append; a daemon thread flushes every
    ``flush_seconds`` (``settings.serving.prediction_log_flush_seconds``; None = only on demand), and
    ``append`` flushes when ``flush_rows`` records are buffered. ``close`` flushes and releases the WAL.
    """

    def __init__(
        self,
        settings: Settings,
        flush_seconds: float | None = -1.0,
        flush_rows: int | None = None,
    ) -> None:
        self.settings = settings
        self.flush_rows = flush_rows or settings.serving.prediction_log_flush_rows
        interval = settings.serving.prediction_log_flush_seconds if flush_seconds == -1.0 else flush_seconds
        self._lock = threading.Lock()
        self._buffer: list[list[Any]] = []
        self._seq = 0
        self._closed = False
        self.recovered = recover_orphans(settings)
        wal_dir(settings).mkdir(parents=True, exist_ok=True)
        self._flush_lock = threading.Lock()
        self._stale: list[tuple[IO[bytes], Path]] = []
        self.wal_path: Path
        self._wal: IO[bytes]
        self._open_wal()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval:
            self._thread = threading.Thread(
                target=self._run, args=(interval,), name="prediction-log-flush", daemon=True
            )
            self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # keep flushing later; the rows stay buffered and in the WAL
                logging.getLogger(__name__).exception("prediction log flush failed")
            try:
                recovered = recover_orphans(self.settings)
            except Exception:  # a dead writer's WAL stays for the next try
                logging.getLogger(__name__).exception("prediction log recovery failed")
                continue
            if recovered:
                self.recovered += recovered
                logging.getLogger(__name__).warning(
                    "prediction log: %d records of a dead writer recovered into a segment", recovered
                )

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Validate and log ``records`` (mappings with the schema's fields)."""
        rows = [to_raw_row(r) for r in records]
        if not rows:
            return
        payload = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        with self._lock:
            if self._closed:
                raise RuntimeError("prediction log writer is closed")
            self._wal.write(payload)
            self._wal.flush()  # to the OS: survives a killed process
            self._buffer.extend(rows)
            full = len(self._buffer) >= self.flush_rows
        if full:
            self.flush()

    def _open_wal(self) -> None:
        self._wal, self.wal_path = self._new_wal()

    def _new_wal(self) -> tuple[IO[bytes], Path]:
        """A new WAL file, locked before it gets its ``.wal`` name: a writer looking for orphans never
        finds it unlocked."""
        name = f"{os.getpid()}-{uuid.uuid4().hex}.wal"
        tmp = wal_dir(self.settings) / f".{name}.tmp"
        fh = open(tmp, "ab")  # noqa: SIM115 - held until rotated or closed
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = tmp.with_name(name)
            os.rename(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            fh.close()
            raise
        return fh, path

    def flush(self) -> int:
        """Write buffered records as one segment; returns how many.

        Appends are blocked only while the buffer is swapped and the WAL rotated to a new file; the
        Parquet write and fsync happen outside that lock (one flush at a time). The rotated WAL is
        deleted once its rows are in a segment; if the write fails, the rows go back to the buffer and
        the rotated WAL is kept (and locked) until a later flush stores them.
        """
        with self._flush_lock:
            with self._lock:
                if not self._buffer or self._closed:
                    return 0
                wal = self._new_wal()  # first: if it fails, nothing has moved
                rows, self._buffer = self._buffer, []
                self._seq += 1
                self._stale.append((self._wal, self.wal_path))
                self._wal, self.wal_path = wal
            try:
                _write_segment(segments_dir(self.settings), frame_from_raw(rows), self._seq)
            except Exception:
                with self._lock:
                    self._buffer[:0] = rows  # retried by the next flush; their WAL stays
                raise
            for fh, path in self._stale:
                path.unlink(missing_ok=True)  # before the lock is released: never seen unlocked
                fh.close()
            self._stale = []
            return len(rows)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.wal_path.unlink(missing_ok=True)  # before the lock is released: never seen unlocked
            self._wal.close()

    def __enter__(self) -> PredictionLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_predictions(settings: Settings, frame: pl.DataFrame) -> int:
    """Batch append: ``frame`` must hold every schema column (castable); returns rows written."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise PredictionLogError(f"prediction frame misses column(s) {missing}")
    if frame.is_empty():
        return 0
    ts_type = frame.schema["ts"]
    zone = getattr(ts_type, "time_zone", None)
    ts = pl.col("ts").cast(pl.Datetime("us", zone))
    ts = ts.dt.convert_time_zone("UTC") if zone else ts.dt.replace_time_zone("UTC")
    try:
        out = frame.select(
            [ts if c == "ts" else pl.col(c).cast(t, strict=True) for c, t in PREDICTION_LOG_SCHEMA.items()]
        )
    except pl.exceptions.PolarsError as exc:
        raise PredictionLogError(f"prediction frame does not cast to the log schema: {exc}") from exc
    for column, allowed in (("variant", VARIANTS), ("source", SOURCES)):
        bad = out.filter(~pl.col(column).is_in(list(allowed)))[column].unique().to_list()
        if bad:
            raise PredictionLogError(f"prediction log column '{column}': {bad} not in {allowed}")
    _write_segment(segments_dir(settings), out, 0)
    return out.height


def read_predictions(
    settings: Settings, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> pl.DataFrame:
    """Flushed predictions with ``start <= ts < end`` (naive datetimes are UTC), ordered by ts."""
    files = sorted(segments_dir(settings).glob("*.parquet")) if segments_dir(settings).exists() else []
    if not files:
        return pl.DataFrame(schema=PREDICTION_LOG_SCHEMA)
    lazy = pl.scan_parquet(files, schema=PREDICTION_LOG_SCHEMA)
    if start is not None:
        lazy = lazy.filter(pl.col("ts") >= _aware(start))
    if end is not None:
        lazy = lazy.filter(pl.col("ts") < _aware(end))
    return lazy.sort("ts", maintain_order=True).collect()


def read_snapshots(settings: Settings, as_of: Sequence[dt.date]) -> pl.DataFrame:
    """Flushed predictions of the given feature-snapshot dates (column ``as_of``), whatever their ``ts``:
    a production week's batch rows (``ts`` = the as-of midnight) and the live service's rows (``ts`` = wall
    clock, ``as_of`` = the snapshot its live clock served), ordered by ts."""
    files = sorted(segments_dir(settings).glob("*.parquet")) if segments_dir(settings).exists() else []
    if not files or not as_of:
        return pl.DataFrame(schema=PREDICTION_LOG_SCHEMA)
    lazy = pl.scan_parquet(files, schema=PREDICTION_LOG_SCHEMA)
    return lazy.filter(pl.col("as_of").is_in(list(as_of))).sort("ts", maintain_order=True).collect()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
