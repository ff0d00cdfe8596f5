"""Online feature store: the latest feature values per customer, for serving.

One interface (:class:`OnlineStore`), two backends:

* :class:`SQLiteOnlineStore` (embedded default): one WAL-mode table ``online_features`` keyed by
  ``(customer_id, group_name)`` holding the group's packed values.
* :class:`RedisOnlineStore`: one hash per customer, ``{prefix}:{customer_id}``, with one field per
  feature group holding the packed values; the key expires (``PEXPIRE``) when its freshest group
  outlives its TTL, so Redis itself drops data older than every group's TTL.

A packed group value is the orjson array ``[event_timestamp_us, value_1, ..., value_n]`` with the
values in the group's declared feature order; ints, floats, strings and None keep their types
(NaN floats read back as None).

The world is simulated, so writes and reads take the simulated clock ``now`` (naive UTC). A read
never returns a value older than its group's TTL (``now - event_timestamp > ttl``) nor one from
the future (``event_timestamp > now``): such groups read as None.
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import polars as pl
import pyarrow as pa
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from churn_assets.feature_store.definitions import (
    ENTITY,
    EVENT_TIMESTAMP,
    FEATURE_GROUPS,
    feature_group,
    resolve,
)
from churn_assets.feature_store.offline import to_arrow, utcnow, validate_frame

if TYPE_CHECKING:
    from churn_assets.settings import Settings

_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)


def _to_us(ts: dt.datetime) -> int:
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
    return (ts - _EPOCH) // _US


class GroupState(NamedTuple):
    """What a read found for one customer and feature group.

    ``event_timestamp`` is None when the store has no row for the group; ``staleness`` is
    ``now - event_timestamp``; ``expired`` is True when the row exists but is older than the TTL
    (or from the future), in which case the group's values read as None.
    """

    event_timestamp: dt.datetime | None
    staleness: dt.timedelta | None
    expired: bool

    @property
    def served(self) -> bool:
        return self.event_timestamp is not None and not self.expired


_MISSING = GroupState(None, None, False)


class CustomerFeatures(NamedTuple):
    """One customer's features: ``values`` maps feature name → value (None when missing/expired)."""

    customer_id: int
    values: dict[str, Any]
    groups: dict[str, GroupState]

    @property
    def expired_groups(self) -> list[str]:
        return [g for g, s in self.groups.items() if s.expired]

    @property
    def missing_groups(self) -> list[str]:
        return [g for g, s in self.groups.items() if s.event_timestamp is None]

    @property
    def found(self) -> bool:
        """Whether any group had a row for the customer (expired or not)."""
        return any(s.event_timestamp is not None for s in self.groups.values())


@dataclass(frozen=True)
class OnlineReadResult:
    """Result of :meth:`OnlineStore.read`: one :class:`CustomerFeatures` per requested id, in order."""

    now: dt.datetime
    features: list[str]
    customers: list[CustomerFeatures] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.customers)

    def __iter__(self) -> Iterator[CustomerFeatures]:
        return iter(self.customers)

    def __getitem__(self, customer_id: int) -> CustomerFeatures:
        for customer in self.customers:
            if customer.customer_id == customer_id:
                return customer
        raise KeyError(customer_id)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Rows ``{customer_id, <feature>: value, ...}`` (e.g. a model's input frame)."""
        return [{ENTITY: c.customer_id, **c.values} for c in self.customers]

    def to_polars(self) -> pl.DataFrame:
        """The values as a polars frame with the declared dtypes (one row per requested id)."""
        dtypes = {f.name: f.dtype for g in FEATURE_GROUPS for f in g.features}
        polars_types = {"int64": pl.Int64, "float64": pl.Float64, "string": pl.String}
        schema = {ENTITY: pl.Int64, **{f: polars_types[dtypes[f]] for f in self.features}}
        return pl.DataFrame(self.to_dicts(), schema=schema, orient="row")


class _GroupPlan(NamedTuple):
    name: str
    ttl_us: int
    positions: slice | tuple[int, ...]  # where the wanted features sit in the packed array
    nones: tuple[None, ...]


class _ReadPlan(NamedTuple):
    """What a read fetches: the groups (in order) and the feature names (in output order)."""

    groups: tuple[_GroupPlan, ...]
    features: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _read_plan(features: tuple[str, ...] | None) -> _ReadPlan:
    wanted = resolve(list(features) if features is not None else None)
    groups = []
    for name, names in wanted.items():
        group = feature_group(name)
        positions = tuple(group.feature_names.index(f) + 1 for f in names)  # 0 holds the timestamp
        whole = positions == tuple(range(1, len(group.features) + 1))
        groups.append(
            _GroupPlan(name, group.ttl // _US, slice(1, None) if whole else positions, (None,) * len(names))
        )
    return _ReadPlan(tuple(groups), tuple(f for names in wanted.values() for f in names))


@functools.lru_cache(maxsize=4096)
def _stamp(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


@functools.lru_cache(maxsize=4096)
def _age(us: int) -> dt.timedelta:
    return dt.timedelta(microseconds=us)


class OnlineStore(abc.ABC):
    """Latest feature values per customer with TTL-aware reads; see the module docstring."""

    def write(self, group_name: str, table: pa.Table | pl.DataFrame, *, now: dt.datetime) -> int:
        """Store the newest row per customer of ``table`` (a frame as written to the offline store).

        Rows already older than the group's TTL at ``now`` are skipped; a customer's previous value
        for the group is replaced. Returns the number of customers written.
        """
        group = feature_group(group_name)
        arrow = to_arrow(table)
        validate_frame(group, arrow)
        frame = pl.from_arrow(arrow.select([ENTITY, EVENT_TIMESTAMP, *group.feature_names]))
        assert isinstance(frame, pl.DataFrame)
        oldest = now - group.ttl
        frame = (
            frame.with_columns(pl.col(EVENT_TIMESTAMP).cast(pl.Datetime("us")))
            .filter(pl.col(EVENT_TIMESTAMP) >= oldest)
            .sort(EVENT_TIMESTAMP)
            .unique(subset=ENTITY, keep="last", maintain_order=False)
        )
        # Epoch microseconds of the timestamp, then the features: one packed value per row.
        frame = frame.with_columns(pl.col(EVENT_TIMESTAMP).dt.epoch("us"))
        rows = frame.iter_rows()
        packed = [(row[0], row[1], orjson.dumps(row[1:])) for row in rows]
        self._put(group_name, packed, now=now)
        return len(packed)

    def read(
        self,
        customer_ids: Sequence[int],
        features: list[str] | None = None,
        *,
        now: dt.datetime | None = None,
    ) -> OnlineReadResult:
        """Features of ``customer_ids`` (all 45 by default; references as in ``resolve``) at ``now``.

        ``now`` is the (simulated) clock, default wall-clock UTC. Values of a group missing for a
        customer, older than the group's TTL or newer than ``now`` are None.
        """
        now = now or utcnow()
        now_us = _to_us(now)
        plan = _read_plan(tuple(features) if features is not None else None)
        ids = [int(c) for c in customer_ids]
        packed_rows = self._get(ids, [g.name for g in plan.groups])
        customers = []
        for cid, row in zip(ids, packed_rows, strict=True):
            values: list[Any] = []
            states: dict[str, GroupState] = {}
            for group, packed in zip(plan.groups, row, strict=True):
                if packed is None:
                    states[group.name] = _MISSING
                    values.extend(group.nones)
                    continue
                age_us = now_us - packed[0]
                expired = age_us < 0 or age_us > group.ttl_us
                states[group.name] = GroupState(_stamp(packed[0]), _age(age_us), expired)
                if expired:
                    values.extend(group.nones)
                elif isinstance(group.positions, slice):
                    values.extend(packed[group.positions])
                else:
                    values.extend([packed[i] for i in group.positions])
            customers.append(CustomerFeatures(cid, dict(zip(plan.features, values, strict=True)), states))
        return OnlineReadResult(now=now, features=list(plan.features), customers=customers)

    @abc.abstractmethod
    def _put(self, group_name: str, rows: list[tuple[int, int, bytes]], *, now: dt.datetime) -> None:
        """Store ``(customer_id, event_timestamp_us, packed)`` rows of one group."""

    @abc.abstractmethod
    def _get(self, customer_ids: list[int], groups: Sequence[str]) -> list[list[list[Any] | None]]:
        """Decoded packed values per requested customer (in order) and group (in order); None when absent."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Delete everything this store holds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteOnlineStore(OnlineStore):
    """Online store in one SQLite file (WAL): ``online_features(customer_id, group_name, event_timestamp, payload)``.

    ``event_timestamp`` is epoch microseconds; ``payload`` the packed group value.
    """

    TABLE = "online_features"
    #: Customers per ``IN (...)`` query (SQLite's bound-parameter limit is 32766).
    READ_CHUNK = 10_000

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {self.TABLE} (customer_id INTEGER NOT NULL, group_name TEXT NOT NULL,"
            " event_timestamp INTEGER NOT NULL, payload BLOB NOT NULL,"
            " PRIMARY KEY (customer_id, group_name)) WITHOUT ROWID"
        )

    def _put(self, group_name: str, rows: list[tuple[int, int, bytes]], *, now: dt.datetime) -> None:
        with self.con:
            self.con.execute("BEGIN")
            self.con.executemany(
                f"INSERT OR REPLACE INTO {self.TABLE} VALUES (?, '{group_name}', ?, ?)",
                rows,
            )

    def _get(self, customer_ids: list[int], groups: Sequence[str]) -> list[list[list[Any] | None]]:
        found: dict[tuple[int, str], list[Any]] = {}
        unique = list(dict.fromkeys(customer_ids))
        group_filter = ",".join("?" * len(groups))
        for start in range(0, len(unique), self.READ_CHUNK):
            chunk = unique[start : start + self.READ_CHUNK]
            cursor = self.con.execute(
                f"SELECT customer_id, group_name, payload FROM {self.TABLE}"
                f" WHERE customer_id IN ({','.join('?' * len(chunk))}) AND group_name IN ({group_filter})",
                [*chunk, *groups],
            )
            found.update(((cid, g), orjson.loads(payload)) for cid, g, payload in cursor)
        return [[found.get((cid, g)) for g in groups] for cid in customer_ids]

    def clear(self) -> None:
        self.con.execute(f"DELETE FROM {self.TABLE}")

    def close(self) -> None:
        self.con.close()


#: KEYS = customer hashes, ARGV = group fields → one JSON array of len(KEYS) × len(ARGV) packed
#: values (``null`` where absent), customer-major.
_READ_SCRIPT = """
local out = {}
for _, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #ARGV do
    out[#out + 1] = values[j] or 'null'
  end
end
return '[' .. table.concat(out, ',') .. ']'
"""


class RedisOnlineStore(OnlineStore):
    """Online store in Redis: hash ``{key_prefix}:{customer_id}`` with one packed field per group.

    Writes are pipelined in batches of ``batch_size`` customers; each write sets the key's expiry
    to when its freshest group runs past its TTL (``PEXPIRE ... NX`` then ``GT``: only ever
    extended). A read of any number of customers is one ``EVALSHA`` of a Lua script that HMGETs each
    hash and returns all packed values as one JSON array (single-node Redis: the keys of a read
    must live on one node).
    """

    def __init__(
        self,
        url: str,
        key_prefix: str = "churnops:fs",
        *,
        batch_size: int = 5_000,
        socket_timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.batch_size = batch_size
        self.client = redis.Redis.from_url(
            url,
            **(
                fail_fast_redis_options(socket_timeout, connect_timeout)
                if connect_timeout is not None
                else {"socket_timeout": socket_timeout}
            ),
        )
        self._read_script = self.client.register_script(_READ_SCRIPT)

    def key(self, customer_id: int) -> str:
        return f"{self.key_prefix}:{customer_id}"

    def _put(self, group_name: str, rows: list[tuple[int, int, bytes]], *, now: dt.datetime) -> None:
        ttl_us = feature_group(group_name).ttl // _US
        now_us = _to_us(now)
        for start in range(0, len(rows), self.batch_size):
            pipe = self.client.pipeline(transaction=False)
            for cid, ts_us, payload in rows[start : start + self.batch_size]:
                key = self.key(cid)
                expire_ms = max(1, (ts_us + ttl_us - now_us) // 1000)
                pipe.hset(key, group_name, payload)
                pipe.pexpire(key, expire_ms, nx=True)
                pipe.pexpire(key, expire_ms, gt=True)
            pipe.execute()

    def _get(self, customer_ids: list[int], groups: Sequence[str]) -> list[list[list[Any] | None]]:
        # One round trip: the script HMGETs every key and splices the packed values into one JSON
        # array server-side, which the client parses with a single orjson call.
        keys = [f"{self.key_prefix}:{cid}" for cid in customer_ids]
        flat = orjson.loads(self._read_script(keys=keys, args=list(groups)))
        width = len(groups)
        return [flat[i : i + width] for i in range(0, len(flat), width)]

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.key_prefix}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            self.client.unlink(*keys[start : start + 10_000])

    def close(self) -> None:
        self.client.close()


def fail_fast_redis_options(timeout: float | None, connect_timeout: float | None) -> dict[str, Any]:
    """``redis.Redis`` keyword arguments of a request-path client: socket read and connect timeouts, and no
    waiting beyond them — a timed-out command is not retried, a broken connection (e.g. a pooled socket of a
    restarted server) is retried once without backoff. redis-py's default retries a failed command 10 times
    with exponential backoff, which turns an unreachable server into multi-second stalls."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }


def make_online_store(
    settings: Settings,
    *,
    read_timeout_seconds: float | None = None,
    connect_timeout_seconds: float | None = None,
) -> OnlineStore:
    """The online store chosen by ``settings.feature_store.online_backend``.

    ``read_timeout_seconds`` bounds every Redis command (socket timeout; the serving path passes
    ``serving.feature_store_timeout_seconds``); None waits as long as Redis takes. With
    ``connect_timeout_seconds`` the client is a fail-fast one (:func:`fail_fast_redis_options`).
    """
    fs = settings.feature_store
    if fs.online_backend == "redis":
        return RedisOnlineStore(
            fs.redis_url.get_secret_value(),
            fs.redis_key_prefix,
            batch_size=fs.redis_batch_size,
            socket_timeout=read_timeout_seconds,
            connect_timeout=connect_timeout_seconds,
        )
    return SQLiteOnlineStore(settings.online_sqlite_path)
