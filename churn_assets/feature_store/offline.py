"""Offline feature store: one DuckDB table per feature group, point-in-time (PIT) retrieval.

Physical layout (schema ``features``):

* ``features.<group>``: ``customer_id BIGINT, event_timestamp TIMESTAMP, created_at TIMESTAMP`` then
  the group's declared features (int64 → BIGINT, float64 → DOUBLE, string → VARCHAR), one row per
  (customer, snapshot), kept physically sorted by ``(customer_id, event_timestamp)``.
* ``features._asof_index``: a derived key index (rebuilt lazily after any write) with one row per
  customer and per snapshot time of any group, from the customer's first row until the largest
  TTL after its last row. Its column ``ts_<group>`` holds the customer's latest ``event_timestamp``
  in that group at or before the row's time.

Retrieval plan (see :meth:`OfflineStore.get_historical_features`): each entity row is mapped to
the latest snapshot time ``T <= entity_ts`` of the whole store (an ASOF join against the few
distinct snapshot times), one hash join on ``(customer_id, T)`` against the index yields the
matching ``event_timestamp`` of every group (NULL when older than the group's TTL), then one hash
join per group fetches the feature values, sorted back to input order by the entity row number.
This replaces one wide ASOF join per group (sorting the whole group table each time) by one tiny
ASOF join and hash joins; every entity row comes back, in input order, duplicates included.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from churn_assets.feature_store.definitions import (
    ENTITY,
    EVENT_TIMESTAMP,
    FEATURE_GROUPS,
    DType,
    FeatureGroup,
    feature_group,
    resolve,
)

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "features"
INDEX_TABLE = f"{SCHEMA}._asof_index"
CREATED_AT = "created_at"
SQL_TYPES: dict[DType, str] = {"int64": "BIGINT", "float64": "DOUBLE", "string": "VARCHAR"}
_ROW = "__churnops_row"


class FeatureSchemaError(ValueError):
    """A frame written to a feature group does not match the group's declaration."""


def utcnow() -> dt.datetime:
    """Wall-clock UTC as a naive datetime (the store's timestamps are naive UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def table_name(group: FeatureGroup | str) -> str:
    """Qualified DuckDB table name of a group, e.g. ``features.customer_usage``."""
    name = group if isinstance(group, str) else group.name
    return f"{SCHEMA}.{feature_group(name).name}"


def _ts_column(group_name: str) -> str:
    return f"ts_{group_name}"


def _ttl_sql(ttl: dt.timedelta) -> str:
    return f"INTERVAL {int(ttl.total_seconds() * 1_000_000)} MICROSECOND"


def group_ddl(group: FeatureGroup) -> str:
    """``CREATE TABLE IF NOT EXISTS`` statement of a group's offline table (writes check keys are non-NULL)."""
    cols = [f"{ENTITY} BIGINT", f"{EVENT_TIMESTAMP} TIMESTAMP", f"{CREATED_AT} TIMESTAMP"]
    cols += [f"{f.name} {SQL_TYPES[f.dtype]}" for f in group.features]
    return f"CREATE TABLE IF NOT EXISTS {table_name(group)} ({', '.join(cols)})"


def _accepts(dtype: DType | str, arrow_type: pa.DataType) -> bool:
    """Whether an Arrow column type may be stored (losslessly) as the declared dtype."""
    if pa.types.is_null(arrow_type):
        return True
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if dtype == "int64":
        return pa.types.is_integer(arrow_type)
    if dtype == "float64":
        return pa.types.is_floating(arrow_type)
    if dtype == "string":
        return (
            pa.types.is_string(arrow_type)
            or pa.types.is_large_string(arrow_type)
            or pa.types.is_string_view(arrow_type)
        )
    if dtype == "timestamp":
        return pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type)
    raise ValueError(f"unknown dtype {dtype!r}")


def to_arrow(frame: Any) -> pa.Table:
    """A polars/pandas DataFrame or Arrow table/record batch as an Arrow table (no copy for Arrow/polars)."""
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    if isinstance(frame, pl.DataFrame):
        return frame.to_arrow()
    if type(frame).__module__.startswith("pandas"):
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise TypeError(f"expected a polars/pandas DataFrame or a pyarrow Table, got {type(frame).__name__}")


def validate_frame(group: FeatureGroup, table: pa.Table) -> None:
    """Raise :class:`FeatureSchemaError` unless ``table`` has exactly the group's columns and dtypes.

    Required: ``customer_id`` (integer), ``event_timestamp`` (timestamp/date), every declared
    feature; optional: ``created_at`` (timestamp). Integer features accept any integer type, float
    features any floating type, string features string/large_string/string_view/dictionary.
    """
    expected: dict[str, str] = {ENTITY: "int64", EVENT_TIMESTAMP: "timestamp"}
    expected.update({f.name: f.dtype for f in group.features})
    schema = table.schema
    missing = [c for c in expected if c not in schema.names]
    if missing:
        detail = ", ".join(f"{c} ({expected[c]})" for c in missing)
        raise FeatureSchemaError(f"feature group {group.name!r}: missing column(s) {detail}")
    extra = [c for c in schema.names if c not in expected and c != CREATED_AT]
    if extra:
        raise FeatureSchemaError(
            f"feature group {group.name!r}: unexpected column(s) {', '.join(extra)}; "
            f"declared features are {', '.join(group.feature_names)}"
        )
    if len(set(schema.names)) != len(schema.names):
        raise FeatureSchemaError(f"feature group {group.name!r}: duplicate column names {schema.names}")
    if CREATED_AT in schema.names:
        expected[CREATED_AT] = "timestamp"
    for name, dtype in expected.items():
        arrow_type = schema.field(name).type
        if not _accepts(dtype, arrow_type):
            raise FeatureSchemaError(
                f"feature group {group.name!r}: column {name!r} must be {dtype}, got Arrow type {arrow_type}"
            )


class OfflineStore:
    """The offline (historical) feature store over a DuckDB connection.

    The connection is used as given (the store creates schema ``features`` and the group tables
    if missing, and sets the connection's ``TimeZone`` to UTC so timestamps are naive UTC).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        for group in FEATURE_GROUPS:
            con.execute(group_ddl(group))

    @classmethod
    def open(cls, path: str | Path) -> OfflineStore:
        """Open (creating if needed) the store in the DuckDB database file at ``path``."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return cls(duckdb.connect(str(path)))

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()

    # ------------------------------------------------------------------ writes
    def write(self, group_name: str, table: pa.Table | pl.DataFrame) -> int:
        """Store a group's feature rows; returns the number of rows written.

        Idempotent per snapshot: existing rows of the group whose ``event_timestamp`` occurs in
        ``table`` are replaced. ``created_at`` is filled with the wall clock when absent. Raises
        :class:`FeatureSchemaError` on wrong columns/dtypes, NULL keys or duplicate
        ``(customer_id, event_timestamp)`` pairs.
        """
        return self.write_batches([{group_name: to_arrow(table)}])[group_name]

    def write_batches(self, batches: Iterable[dict[str, pa.Table]]) -> dict[str, int]:
        """Store several batches of ``{group: rows}`` with one table rewrite per group at the end.

        Each batch is staged in DuckDB as soon as it arrives (so a caller can produce large
        snapshot sets a few dates at a time and keep little in Python memory); all groups are then
        replaced in one transaction, with the same rules as :meth:`write`.
        """
        staged: dict[str, str] = {}
        written: dict[str, int] = {}
        now = utcnow()
        try:
            for batch in batches:
                for group_name, table in batch.items():
                    arrow = to_arrow(table)
                    group = feature_group(group_name)
                    validate_frame(group, arrow)
                    incoming = staged.setdefault(group.name, f"_incoming_{uuid.uuid4().hex}")
                    self._stage(group, arrow, incoming, now, create=group.name not in written)
                    written[group.name] = written.get(group.name, 0) + arrow.num_rows
            with self._transaction():
                for group_name, incoming in staged.items():
                    self._replace(feature_group(group_name), incoming)
                if staged:
                    self.con.execute(f"DROP TABLE IF EXISTS {INDEX_TABLE}")
        finally:
            for incoming in staged.values():
                self.con.execute(f"DROP TABLE IF EXISTS {incoming}")
        return written

    def _stage(
        self, group: FeatureGroup, arrow: pa.Table, incoming: str, now: dt.datetime, *, create: bool
    ) -> None:
        created = f"CAST({CREATED_AT} AS TIMESTAMP)" if CREATED_AT in arrow.column_names else "$now"
        select = ", ".join(
            [
                f"CAST({ENTITY} AS BIGINT) AS {ENTITY}",
                f"CAST({EVENT_TIMESTAMP} AS TIMESTAMP) AS {EVENT_TIMESTAMP}",
                f"{created} AS {CREATED_AT}",
            ]
            + [f"CAST({f.name} AS {SQL_TYPES[f.dtype]}) AS {f.name}" for f in group.features]
        )
        view = f"_arrow_{uuid.uuid4().hex}"
        self.con.register(view, arrow)
        try:
            params = {"now": now} if created == "$now" else None
            if create:
                self.con.execute(f"CREATE TEMP TABLE {incoming} AS SELECT {select} FROM {view}", params)
            else:
                self.con.execute(f"INSERT INTO {incoming} SELECT {select} FROM {view}", params)
        finally:
            self.con.unregister(view)

    def _replace(self, group: FeatureGroup, incoming: str) -> None:
        """Replace the group's rows at the staged snapshot times by the staged rows, sorted."""
        nulls, dupes = self.con.execute(
            f"SELECT count(*) FILTER ({ENTITY} IS NULL OR {EVENT_TIMESTAMP} IS NULL), "
            f"count(*) - count(DISTINCT ({ENTITY}, {EVENT_TIMESTAMP})) FROM {incoming}"
        ).fetchall()[0]
        if nulls or dupes:
            raise FeatureSchemaError(
                f"feature group {group.name!r}: {nulls} row(s) with NULL {ENTITY}/{EVENT_TIMESTAMP} "
                f"and {dupes} duplicate ({ENTITY}, {EVENT_TIMESTAMP}) row(s)"
            )
        target = table_name(group)
        self.con.execute(
            f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM ("
            f" SELECT * FROM {target} WHERE {EVENT_TIMESTAMP} NOT IN"
            f" (SELECT DISTINCT {EVENT_TIMESTAMP} FROM {incoming})"
            f" UNION ALL SELECT * FROM {incoming}"
            f") ORDER BY {ENTITY}, {EVENT_TIMESTAMP}"
        )

    def rebuild_index(self) -> None:
        """(Re)build ``features._asof_index`` from the group tables (done lazily by reads after writes)."""
        max_ttl = max(g.ttl for g in FEATURE_GROUPS)
        keys = " UNION ALL ".join(
            f"SELECT {ENTITY}, {EVENT_TIMESTAMP}, {i} AS g FROM {table_name(g)}"
            for i, g in enumerate(FEATURE_GROUPS)
        )
        marks = ", ".join(
            f"max({EVENT_TIMESTAMP}) FILTER (WHERE g = {i}) AS {_ts_column(g.name)}"
            for i, g in enumerate(FEATURE_GROUPS)
        )
        filled = ", ".join(
            f"max(m.{_ts_column(g.name)}) OVER w AS {_ts_column(g.name)}" for g in FEATURE_GROUPS
        )
        self.con.execute(
            f"""
            CREATE OR REPLACE TABLE {INDEX_TABLE} AS
            WITH keys AS ({keys}),
            times AS (SELECT DISTINCT {EVENT_TIMESTAMP} AS ts FROM keys),
            spans AS (
                SELECT {ENTITY}, min({EVENT_TIMESTAMP}) AS first_ts,
                       max({EVENT_TIMESTAMP}) + {_ttl_sql(max_ttl)} AS last_ts
                FROM keys GROUP BY {ENTITY}
            ),
            grid AS (
                SELECT s.{ENTITY}, t.ts FROM spans s JOIN times t ON t.ts BETWEEN s.first_ts AND s.last_ts
            ),
            marks AS (SELECT {ENTITY}, {EVENT_TIMESTAMP} AS ts, {marks} FROM keys GROUP BY ALL)
            SELECT grid.{ENTITY}, grid.ts AS {EVENT_TIMESTAMP}, {filled}
            FROM grid LEFT JOIN marks m ON m.{ENTITY} = grid.{ENTITY} AND m.ts = grid.ts
            WINDOW w AS (PARTITION BY grid.{ENTITY} ORDER BY grid.ts)
            ORDER BY grid.{ENTITY}, grid.ts
            """
        )

    def _ensure_index(self) -> None:
        [(exists,)] = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = $s AND table_name = $t",
            {"s": SCHEMA, "t": INDEX_TABLE.split(".", 1)[1]},
        ).fetchall()
        if not exists:
            self.rebuild_index()

    # ------------------------------------------------------------------ reads
    def get_historical_features(
        self,
        entity_df: pl.DataFrame | pd.DataFrame | pa.Table,
        features: list[str] | None = None,
        *,
        timestamp_column: str = EVENT_TIMESTAMP,
        include_timestamps: bool = False,
    ) -> pl.DataFrame:
        """Point-in-time correct feature values for every row of ``entity_df``.

        ``entity_df`` holds ``customer_id`` and ``timestamp_column`` (naive UTC timestamps or dates)
        plus any other columns, which are kept. ``features`` are references as accepted by
        :func:`~churn_assets.feature_store.definitions.resolve` (default: all 45). For each row and
        group the latest feature row with ``event_timestamp <= entity timestamp`` is used, unless it
        is older than the group's TTL, in which case the group's features are NULL; unknown
        customers get NULLs. The result has the entity columns followed by the features (and
        ``<group>__event_timestamp`` per group when ``include_timestamps``), one row per input row
        in input order, duplicates included.
        """
        wanted = resolve(features)
        entity = to_arrow(entity_df)
        for col in (ENTITY, timestamp_column):
            if col not in entity.column_names:
                raise KeyError(f"entity frame has no column {col!r} (columns: {entity.column_names})")
        out_names = [f for names in wanted.values() for f in names]
        if include_timestamps:
            out_names += [f"{g}__{EVENT_TIMESTAMP}" for g in wanted]
        clash = sorted(set(out_names) & set(entity.column_names))
        if clash:
            raise ValueError(f"entity frame columns clash with requested features: {clash}")

        n = entity.num_rows
        keyed = pa.table(
            {
                ENTITY: entity.column(ENTITY),
                "_ts": entity.column(timestamp_column),
                _ROW: pa.array(np.arange(n, dtype=np.int64)),
            }
        )
        self._ensure_index()
        suffix = uuid.uuid4().hex
        view, keys = f"_entity_{suffix}", f"_keys_{suffix}"
        ts_cols = ", ".join(
            f"CASE WHEN x.{_ts_column(g)} >= e._ts - {_ttl_sql(feature_group(g).ttl)} "
            f"THEN x.{_ts_column(g)} END AS {_ts_column(g)}"
            for g in wanted
        )
        self.con.register(view, keyed)
        try:
            self.con.execute(
                f"""
                CREATE TEMP TABLE {keys} AS
                WITH times AS (SELECT DISTINCT {EVENT_TIMESTAMP} AS t FROM {INDEX_TABLE}),
                e AS (
                    SELECT v.{_ROW}, CAST(v.{ENTITY} AS BIGINT) AS {ENTITY}, CAST(v._ts AS TIMESTAMP) AS _ts
                    FROM {view} v
                ),
                c AS (SELECT e.*, times.t FROM e ASOF LEFT JOIN times ON e._ts >= times.t)
                SELECT e.{_ROW}, e.{ENTITY}, {ts_cols}
                FROM c e LEFT JOIN {INDEX_TABLE} x ON x.{ENTITY} = e.{ENTITY} AND x.{EVENT_TIMESTAMP} = e.t
                """
            )
            columns: dict[str, pa.ChunkedArray] = {}
            stamps: dict[str, pa.ChunkedArray] = {}
            for group_name, names in wanted.items():
                ts = _ts_column(group_name)
                cols = ", ".join([*([f"k.{ts}"] if include_timestamps else []), *(f"f.{c}" for c in names)])
                part = self.con.sql(
                    f"SELECT {cols} FROM {keys} k LEFT JOIN {table_name(group_name)} f"
                    f" ON f.{ENTITY} = k.{ENTITY} AND f.{EVENT_TIMESTAMP} = k.{ts} ORDER BY k.{_ROW}"
                ).to_arrow_table()
                columns.update({c: part.column(c) for c in names})
                if include_timestamps:
                    stamps[f"{group_name}__{EVENT_TIMESTAMP}"] = part.column(ts)
        finally:
            self.con.execute(f"DROP TABLE IF EXISTS {keys}")
            self.con.unregister(view)
        result = entity
        for name, column in columns.items():
            result = result.append_column(name, column)
        if include_timestamps:
            for name, column in stamps.items():
                result = result.append_column(name, column)
        frame = pl.from_arrow(result, rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def latest(self, group_name: str, as_of: dt.datetime | None = None) -> pa.Table:
        """The newest row per customer with ``event_timestamp <= as_of`` (default: newest overall).

        Columns as stored (keys, ``created_at``, features), sorted by ``customer_id``; used to
        materialize the online store.
        """
        target = table_name(group_name)
        where = f"WHERE {EVENT_TIMESTAMP} <= $as_of" if as_of is not None else ""
        params = {"as_of": as_of} if as_of is not None else {}
        return self.con.sql(
            f"SELECT * FROM {target} {where}"
            f" QUALIFY row_number() OVER (PARTITION BY {ENTITY} ORDER BY {EVENT_TIMESTAMP} DESC) = 1"
            f" ORDER BY {ENTITY}",
            params=params,
        ).to_arrow_table()

    def snapshot_times(self, group_name: str) -> list[dt.datetime]:
        """Distinct ``event_timestamp`` values stored for a group, ascending."""
        rows = self.con.execute(
            f"SELECT DISTINCT {EVENT_TIMESTAMP} FROM {table_name(group_name)} ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def row_count(self, group_name: str) -> int:
        """Number of rows stored for a group."""
        [(count,)] = self.con.execute(f"SELECT count(*) FROM {table_name(group_name)}").fetchall()
        return int(count)
