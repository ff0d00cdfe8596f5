"""Feature deprecation: when each feature was last used by a model version holding an alias.

A feature is **in use** while a version holding an alias (``champion``, ``challenger`` or ``previous``) of
any registered model depends on it (the dependency records of ``registry.record_model_features``). Each
observation (:func:`observe_usage`: at registration, and the ``features_not_deprecated`` check after every
online-store materialization) stamps the features in use with the clock. A feature not in use is
**deprecated** once ``deprecate_after_days`` have passed since it was last used — or, if no aliased version
ever used it, since dependencies were first recorded (before any model is registered nothing is judged:
status ``untracked``).

Clock: the simulated one, :func:`feature_clock` — the newest snapshot in the offline store (the "now" of
online reads), wall-clock UTC for an empty store. Stored in DuckDB:
``features.feature_usage(feature, group_name, last_used_at, last_used_by)`` (upserted by observations) and
``features.feature_status(feature, group_name, status, last_used_at, judged_at)`` (the verdict of the last
:func:`refresh_lifecycle`, which online materialization reads to retire deprecated features).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from churn_assets.feature_store.definitions import FEATURE_GROUPS, feature_group
from churn_assets.feature_store.offline import SCHEMA, table_name, utcnow
from churn_assets.feature_store.registry import DEPENDENCY_TABLE, ensure_dependency_table

USAGE_TABLE = f"{SCHEMA}.feature_usage"
STATUS_TABLE = f"{SCHEMA}.feature_status"
IN_USE, ACTIVE, DEPRECATED, UNTRACKED = "in use", "active", "deprecated", "untracked"
CLOCK_GROUP = "customer_account"


@dataclass(frozen=True)
class AliasedVersion:
    """A registered model version and the aliases it holds now."""

    model_name: str
    model_version: str
    aliases: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.model_name} v{self.model_version} ({', '.join(self.aliases)})"


@dataclass(frozen=True)
class FeatureLifecycle:
    """One feature's verdict at ``now``: status, when it was last used and by which aliased versions."""

    feature: str
    group: str
    status: str
    last_used_at: dt.datetime | None
    used_by: tuple[str, ...]
    days_unused: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "group": self.group,
            "status": self.status,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "used_by": list(self.used_by),
            "days_unused": self.days_unused,
        }


def _has_table(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    schema, name = qualified.split(".", 1)
    [(n,)] = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [schema, name]
    ).fetchall()
    return bool(n)


def feature_clock(con: duckdb.DuckDBPyConnection) -> dt.datetime:
    """The simulated clock: the newest ``customer_account`` snapshot in the offline store, else now (UTC)."""
    table = table_name(CLOCK_GROUP)
    if _has_table(con, table):
        [(newest,)] = con.execute(f"SELECT max(event_timestamp) FROM {table}").fetchall()
        if newest is not None:
            return newest  # type: ignore[no-any-return]
    return utcnow()


def _ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_dependency_table(con)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {USAGE_TABLE} (feature VARCHAR PRIMARY KEY, group_name VARCHAR NOT NULL,"
        " last_used_at TIMESTAMP NOT NULL, last_used_by VARCHAR NOT NULL)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {STATUS_TABLE} (feature VARCHAR PRIMARY KEY, group_name VARCHAR NOT NULL,"
        " status VARCHAR NOT NULL, last_used_at TIMESTAMP, judged_at TIMESTAMP NOT NULL)"
    )


def _features_of(con: duckdb.DuckDBPyConnection, aliased: Sequence[AliasedVersion]) -> dict[str, list[str]]:
    """feature -> labels of the aliased versions that depend on it."""
    if not aliased or not _has_table(con, DEPENDENCY_TABLE):
        return {}
    out: dict[str, list[str]] = {}
    for v in aliased:
        rows = con.execute(
            f"SELECT feature FROM {DEPENDENCY_TABLE} WHERE model_name = ? AND model_version = ?",
            [v.model_name, v.model_version],
        ).fetchall()
        for (feature,) in rows:
            out.setdefault(feature, []).append(v.label)
    return out


def observe_usage(con: duckdb.DuckDBPyConnection, aliased: Sequence[AliasedVersion], now: dt.datetime) -> int:
    """Stamp every feature the ``aliased`` versions depend on as used at ``now`` (a later stamp is kept).
    Returns the number of features in use."""
    _ensure_tables(con)
    used = _features_of(con, aliased)
    owner = {f.name: g.name for g in FEATURE_GROUPS for f in g.features}
    rows = [(f, owner[f], now, "; ".join(by)) for f, by in used.items() if f in owner]
    if rows:
        con.executemany(
            f"INSERT INTO {USAGE_TABLE} VALUES (?, ?, ?, ?) ON CONFLICT (feature) DO UPDATE SET"
            " last_used_at = greatest(last_used_at, excluded.last_used_at),"
            " last_used_by = CASE WHEN excluded.last_used_at >= last_used_at THEN excluded.last_used_by"
            " ELSE last_used_by END",
            rows,
        )
    return len(rows)


def feature_lifecycle(
    con: duckdb.DuckDBPyConnection,
    aliased: Sequence[AliasedVersion],
    now: dt.datetime,
    deprecate_after_days: int,
) -> list[FeatureLifecycle]:
    """Every declared feature's verdict at ``now`` (declaration order), from the stored usage stamps and the
    versions ``aliased`` now; reads only (works on a read-only connection)."""
    used = _features_of(con, aliased)
    stamps: dict[str, dt.datetime] = {}
    if _has_table(con, USAGE_TABLE):
        stamps = dict(con.execute(f"SELECT feature, last_used_at FROM {USAGE_TABLE}").fetchall())  # type: ignore[arg-type]
    since: dt.datetime | None = None
    if _has_table(con, DEPENDENCY_TABLE):
        [(since,)] = con.execute(f"SELECT min(recorded_at) FROM {DEPENDENCY_TABLE}").fetchall()
    limit = dt.timedelta(days=deprecate_after_days)
    out = []
    for group in FEATURE_GROUPS:
        for f in group.features:
            last = now if f.name in used else stamps.get(f.name)
            start = last or since
            days = None if start is None else max((now - start) / dt.timedelta(days=1), 0.0)
            if f.name in used:
                status = IN_USE
            elif start is None:
                status = UNTRACKED
            else:
                status = DEPRECATED if now - start >= limit else ACTIVE
            out.append(FeatureLifecycle(f.name, group.name, status, last, tuple(used.get(f.name, [])), days))
    return out


def refresh_lifecycle(
    con: duckdb.DuckDBPyConnection,
    aliased: Sequence[AliasedVersion],
    now: dt.datetime,
    deprecate_after_days: int,
) -> list[FeatureLifecycle]:
    """:func:`observe_usage` then :func:`feature_lifecycle`, and store the verdicts (``feature_status``)."""
    observe_usage(con, aliased, now)
    verdicts = feature_lifecycle(con, aliased, now, deprecate_after_days)
    rows = [(v.feature, v.group, v.status, v.last_used_at, now) for v in verdicts]
    con.begin()
    try:
        con.execute(f"DELETE FROM {STATUS_TABLE}")
        con.executemany(f"INSERT INTO {STATUS_TABLE} VALUES (?, ?, ?, ?, ?)", rows)
    except BaseException:
        con.rollback()
        raise
    con.commit()
    return verdicts


def deprecated_features(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """The features the last :func:`refresh_lifecycle` judged deprecated, as ``{group: [feature, ...]}``."""
    if not _has_table(con, STATUS_TABLE):
        return {}
    rows = con.execute(
        f"SELECT group_name, feature FROM {STATUS_TABLE} WHERE status = ? ORDER BY group_name, feature",
        [DEPRECATED],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for group, feature in rows:
        feature_group(group)  # a stored group that is no longer declared fails loudly
        out.setdefault(group, []).append(feature)
    return out
